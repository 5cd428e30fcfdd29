import KafkaProtocol
import NIOCore

/// A v2 record batch: its parsed header plus the whole batch's bytes, shared with the
/// buffer it came from (no copy).
public struct RecordBatch: Sendable {
    /// The parsed 61-byte header.
    public let header: RecordBatchHeader
    /// The complete batch, header included, exactly as on the wire.
    public let bytes: ByteBuffer

    /// Wraps exactly one batch. Checks the structure (length matches, magic 2, known codec);
    /// the CRC is checked separately with `verifyCRC()` or `validate(maxUncompressedBytes:)`.
    public init(bytes: ByteBuffer) throws(RecordBatchError) {
        let header = try RecordBatchHeader(from: bytes)
        guard header.magic == RecordBatchHeader.currentMagic else { throw .unsupportedMagic(header.magic) }
        guard header.batchLength >= RecordBatchHeader.minimumBatchLength else {
            throw .corrupt("batch length \(header.batchLength) below \(RecordBatchHeader.minimumBatchLength)")
        }
        guard header.totalSize == bytes.readableBytes else {
            throw .corrupt("batch length \(header.batchLength) does not match \(bytes.readableBytes) bytes")
        }
        guard header.codec != nil else { throw .unsupportedCodec(header.attributes & RecordBatchHeader.Attribute.codecMask) }
        guard header.recordCount >= 0 else { throw .corrupt("negative record count \(header.recordCount)") }
        self.header = header
        self.bytes = bytes
    }

    init(validatedHeader: RecordBatchHeader, bytes: ByteBuffer) {
        self.header = validatedHeader
        self.bytes = bytes
    }

    /// The codec from the attributes (validated on init).
    public var codec: CompressionCodec { header.codec ?? .none }
    /// The header's `baseOffset`.
    public var baseOffset: Int64 { header.baseOffset }
    /// The header's `lastOffset`.
    public var lastOffset: Int64 { header.lastOffset }
    /// The header's `nextOffset`.
    public var nextOffset: Int64 { header.nextOffset }
    /// The header's `lastOffsetDelta`.
    public var lastOffsetDelta: Int32 { header.lastOffsetDelta }
    /// The header's `partitionLeaderEpoch`.
    public var partitionLeaderEpoch: Int32 { header.partitionLeaderEpoch }
    /// The header's `baseTimestamp`.
    public var baseTimestamp: Int64 { header.baseTimestamp }
    /// The header's `maxTimestamp`.
    public var maxTimestamp: Int64 { header.maxTimestamp }
    /// The header's `producerId`.
    public var producerId: Int64 { header.producerId }
    /// The header's `producerEpoch`.
    public var producerEpoch: Int16 { header.producerEpoch }
    /// The header's `baseSequence`.
    public var baseSequence: Int32 { header.baseSequence }
    /// The header's `lastSequence`.
    public var lastSequence: Int32 { header.lastSequence }
    /// The header's `recordCount`.
    public var recordCount: Int32 { header.recordCount }
    /// The header's `timestampType`.
    public var timestampType: TimestampType { header.timestampType }
    /// The header's `isTransactional`.
    public var isTransactional: Bool { header.isTransactional }
    /// The header's `isControl`.
    public var isControl: Bool { header.isControl }
    /// The header's `hasDeleteHorizon`.
    public var hasDeleteHorizon: Bool { header.hasDeleteHorizon }
    /// Whether the batch carries an idempotent or transactional producer id.
    public var hasProducerId: Bool { header.producerId >= 0 }
    /// Total bytes including the header.
    public var sizeInBytes: Int { bytes.readableBytes }

    /// The compressed (or plain) records region after the header, zero-copy.
    public var payload: ByteBuffer {
        bytes.getSlice(at: bytes.readerIndex + RecordBatchHeader.size, length: bytes.readableBytes - RecordBatchHeader.size)
            ?? ByteBuffer()
    }

    /// CRC-32C of the bytes the CRC field covers (Attributes to the end).
    public func computeCRC() -> UInt32 {
        bytes.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[RecordBatchHeader.Offset.attributes...]))
        }
    }

    /// Whether the stored CRC matches the bytes.
    public func verifyCRC() -> Bool {
        computeCRC() == header.crc
    }

    /// Decompresses (at most `maxUncompressedBytes`) and parses every record. Keys, values and
    /// header values are slices of the payload (or of the one decompressed buffer).
    public func records(maxUncompressedBytes: Int) throws(RecordBatchError) -> [Record] {
        var data = try Compression.decompress(codec, payload, maxOutputBytes: maxUncompressedBytes)
        let count = Int(header.recordCount)
        guard count <= data.readableBytes / Record.minimumEncodedSize else {
            throw .corrupt("record count \(count) cannot fit in \(data.readableBytes) bytes")
        }
        var records: [Record] = []
        records.reserveCapacity(count)
        do {
            for _ in 0..<count {
                records.append(try Record.read(from: &data))
            }
        } catch {
            throw RecordBatchError(error)
        }
        guard data.readableBytes == 0 else {
            throw .corrupt("\(data.readableBytes) bytes after the last of \(count) records")
        }
        return records
    }

    /// Full produce-path validation: CRC, decompression within the limit, every record parses,
    /// and the offset deltas are exactly 0..<RecordCount with LastOffsetDelta matching.
    /// Returns the records so callers need not parse twice.
    @discardableResult
    public func validate(maxUncompressedBytes: Int) throws(RecordBatchError) -> [Record] {
        let computed = computeCRC()
        guard computed == header.crc else { throw .crcMismatch(stored: header.crc, computed: computed) }
        guard header.recordCount > 0 else { throw .invalidRecord("batch has no records") }
        let records = try records(maxUncompressedBytes: maxUncompressedBytes)
        for (index, record) in records.enumerated() where Int(record.offsetDelta) != index {
            throw .invalidRecord("record \(index) has offset delta \(record.offsetDelta)")
        }
        guard Int(header.lastOffsetDelta) == records.count - 1 else {
            throw .invalidRecord("last offset delta \(header.lastOffsetDelta) with \(records.count) records")
        }
        return records
    }

    // MARK: Rewriting on the produce path

    /// Writes BaseOffset and PartitionLeaderEpoch of the batch starting at `batchAt` (an absolute
    /// index into `buffer`). Both fields are outside the CRC, so it stays valid.
    public static func stamp(
        batchAt index: Int, in buffer: inout ByteBuffer, baseOffset: Int64, partitionLeaderEpoch: Int32
    ) throws(RecordBatchError) {
        guard index >= 0, index <= buffer.writerIndex - RecordBatchHeader.size else {
            throw .corrupt("no batch header at index \(index)")
        }
        buffer.setInteger(baseOffset, at: index + RecordBatchHeader.Offset.baseOffset, endianness: .big)
        buffer.setInteger(
            partitionLeaderEpoch, at: index + RecordBatchHeader.Offset.partitionLeaderEpoch, endianness: .big)
    }

    /// Switches the batch at `batchAt` to LogAppendTime with `timestamp` as MaxTimestamp and
    /// recomputes the CRC. The old CRC is checked first so a corrupt batch is never re-sealed.
    public static func setLogAppendTime(
        batchAt index: Int, in buffer: inout ByteBuffer, timestamp: Int64
    ) throws(RecordBatchError) {
        guard index >= 0, index <= buffer.writerIndex - RecordBatchHeader.size,
            let batchLength = buffer.getInteger(at: index + RecordBatchHeader.Offset.batchLength, endianness: .big, as: Int32.self),
            batchLength >= RecordBatchHeader.minimumBatchLength,
            Int(batchLength) + RecordBatchHeader.logOverhead <= buffer.writerIndex - index,
            let storedCRC = buffer.getInteger(at: index + RecordBatchHeader.Offset.crc, endianness: .big, as: UInt32.self),
            let attributes = buffer.getInteger(at: index + RecordBatchHeader.Offset.attributes, endianness: .big, as: Int16.self)
        else {
            throw .corrupt("no complete batch at index \(index)")
        }
        let crcStart = index + RecordBatchHeader.Offset.attributes
        let crcLength = Int(batchLength) + RecordBatchHeader.logOverhead - RecordBatchHeader.Offset.attributes
        func crc(_ buffer: ByteBuffer) -> UInt32 {
            buffer.withVeryUnsafeBytes { raw in
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[crcStart..<(crcStart + crcLength)]))
            }
        }
        let computed = crc(buffer)
        guard computed == storedCRC else { throw .crcMismatch(stored: storedCRC, computed: computed) }
        buffer.setInteger(
            attributes | RecordBatchHeader.Attribute.logAppendTime, at: crcStart, endianness: .big)
        buffer.setInteger(timestamp, at: index + RecordBatchHeader.Offset.maxTimestamp, endianness: .big)
        buffer.setInteger(crc(buffer), at: index + RecordBatchHeader.Offset.crc, endianness: .big)
    }

    /// A copy with BaseOffset and PartitionLeaderEpoch replaced (CRC unchanged).
    public func stamped(baseOffset: Int64, partitionLeaderEpoch: Int32) -> RecordBatch {
        var copy = bytes
        try? Self.stamp(batchAt: copy.readerIndex, in: &copy, baseOffset: baseOffset, partitionLeaderEpoch: partitionLeaderEpoch)
        var header = self.header
        header.baseOffset = baseOffset
        header.partitionLeaderEpoch = partitionLeaderEpoch
        return RecordBatch(validatedHeader: header, bytes: copy)
    }

    /// A copy switched to LogAppendTime at `timestamp`, with a new CRC.
    public func withLogAppendTime(_ timestamp: Int64) throws(RecordBatchError) -> RecordBatch {
        var copy = bytes
        try Self.setLogAppendTime(batchAt: copy.readerIndex, in: &copy, timestamp: timestamp)
        return try RecordBatch(bytes: copy)
    }
}
