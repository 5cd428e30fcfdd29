import KafkaProtocol
import NIOCore

/// Builds one v2 batch: records are encoded as they are appended; `build()` compresses,
/// fills the header (LastOffsetDelta, MaxTimestamp, RecordCount) and seals it with the CRC.
public struct RecordBatchBuilder: Sendable {
    /// Codec applied to the records at `build()`.
    public var codec: CompressionCodec
    /// BaseOffset written into the header (producers use 0).
    public var baseOffset: Int64
    /// PartitionLeaderEpoch written into the header (producers use -1).
    public var partitionLeaderEpoch: Int32
    /// Producer id, -1 when not idempotent.
    public var producerId: Int64
    /// Producer epoch, -1 when not idempotent.
    public var producerEpoch: Int16
    /// Sequence of the first record, -1 when not idempotent.
    public var baseSequence: Int32
    /// Sets attribute bit 4.
    public var isTransactional: Bool
    /// Sets attribute bit 5.
    public var isControl: Bool
    /// Sets attribute bit 3 for LogAppendTime.
    public var timestampType: TimestampType
    /// Timestamp deltas are relative to this; when nil, the first appended timestamp is used.
    public private(set) var baseTimestamp: Int64?

    private var payload: ByteBuffer
    private var count: Int32 = 0
    private var maxOffsetDelta: Int32 = -1
    private var maxTimestamp: Int64 = .min

    /// A builder with the batch-level fields; records come with `append`.
    public init(
        codec: CompressionCodec = .none, baseOffset: Int64 = 0, partitionLeaderEpoch: Int32 = -1,
        producerId: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1,
        isTransactional: Bool = false, isControl: Bool = false, timestampType: TimestampType = .createTime,
        baseTimestamp: Int64? = nil, expectedPayloadBytes: Int = 1024
    ) {
        self.codec = codec
        self.baseOffset = baseOffset
        self.partitionLeaderEpoch = partitionLeaderEpoch
        self.producerId = producerId
        self.producerEpoch = producerEpoch
        self.baseSequence = baseSequence
        self.isTransactional = isTransactional
        self.isControl = isControl
        self.timestampType = timestampType
        self.baseTimestamp = baseTimestamp
        self.payload = ByteBufferAllocator().buffer(capacity: max(64, min(expectedPayloadBytes, 64 << 20)))
    }

    /// Records appended so far.
    public var recordCount: Int { Int(count) }
    /// Uncompressed size of the batch so far (header plus encoded records).
    public var uncompressedSize: Int { RecordBatchHeader.size + payload.readableBytes }

    /// Appends a record at the next offset delta with an absolute timestamp.
    public mutating func append(
        timestamp: Int64, key: ByteBuffer?, value: ByteBuffer?, headers: [RecordHeader] = []
    ) throws(RecordBatchError) {
        let base = baseTimestamp ?? timestamp
        baseTimestamp = base
        try append(
            Record(timestampDelta: timestamp &- base, offsetDelta: count, key: key, value: value, headers: headers))
    }

    /// Appends a record with its deltas as given (base timestamp 0 unless one was set).
    public mutating func append(_ record: Record) throws(RecordBatchError) {
        guard count < Int32.max else { throw .tooLarge(limit: Int(Int32.max)) }
        let base = baseTimestamp ?? 0
        baseTimestamp = base
        guard record.write(to: &payload) else { throw .tooLarge(limit: Int(Int32.max)) }
        count += 1
        maxOffsetDelta = max(maxOffsetDelta, record.offsetDelta)
        maxTimestamp = max(maxTimestamp, base &+ record.timestampDelta)
    }

    /// The attribute bits this builder writes.
    public var attributes: Int16 {
        var attributes = codec.rawValue
        if timestampType == .logAppendTime { attributes |= RecordBatchHeader.Attribute.logAppendTime }
        if isTransactional { attributes |= RecordBatchHeader.Attribute.transactional }
        if isControl { attributes |= RecordBatchHeader.Attribute.control }
        return attributes
    }

    /// Compresses and seals the batch. A batch needs at least one record.
    public func build() throws(RecordBatchError) -> RecordBatch {
        guard count > 0 else { throw .invalidRecord("a batch needs at least one record") }
        let body = try Compression.compress(codec, payload)
        let batchLength = Int(RecordBatchHeader.minimumBatchLength) + body.readableBytes
        guard batchLength <= Int(Int32.max) else { throw .tooLarge(limit: Int(Int32.max)) }
        var header = RecordBatchHeader(
            baseOffset: baseOffset, batchLength: Int32(batchLength), partitionLeaderEpoch: partitionLeaderEpoch,
            attributes: attributes, lastOffsetDelta: maxOffsetDelta, baseTimestamp: baseTimestamp ?? -1,
            maxTimestamp: maxTimestamp, producerId: producerId, producerEpoch: producerEpoch,
            baseSequence: baseSequence, recordCount: count)
        var bytes = ByteBufferAllocator().buffer(capacity: RecordBatchHeader.size + body.readableBytes)
        header.write(to: &bytes)
        bytes.writeImmutableBuffer(body)
        header.crc = bytes.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[RecordBatchHeader.Offset.attributes...]))
        }
        bytes.setInteger(header.crc, at: RecordBatchHeader.Offset.crc, endianness: .big)
        return RecordBatch(validatedHeader: header, bytes: bytes)
    }
}
