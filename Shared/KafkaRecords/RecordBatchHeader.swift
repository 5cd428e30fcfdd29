import KafkaProtocol
import NIOCore

/// Which clock a batch's timestamps come from (attribute bit 3).
public enum TimestampType: Int8, Hashable, Sendable {
    /// Set by the producer.
    case createTime = 0
    /// Set by the broker when it appends the batch.
    case logAppendTime = 1
}

/// The fixed 61-byte header of a v2 record batch.
public struct RecordBatchHeader: Hashable, Sendable {
    /// Bytes in the header; records start right after it.
    public static let size = 61
    /// The only record format this implementation reads and writes.
    public static let currentMagic: Int8 = 2
    /// BatchLength counts the bytes after itself, so a batch with no records has this length.
    public static let minimumBatchLength: Int32 = Int32(size - 12)
    /// Bytes before the BatchLength field ends (BaseOffset + BatchLength), not counted in BatchLength.
    public static let logOverhead = 12

    /// Byte positions of the fields within a batch.
    public enum Offset {
        public static let baseOffset = 0
        public static let batchLength = 8
        public static let partitionLeaderEpoch = 12
        public static let magic = 16
        public static let crc = 17
        public static let attributes = 21
        public static let lastOffsetDelta = 23
        public static let baseTimestamp = 27
        public static let maxTimestamp = 35
        public static let producerId = 43
        public static let producerEpoch = 51
        public static let baseSequence = 53
        public static let recordCount = 57
    }

    /// Attribute bits other than the codec.
    public enum Attribute {
        public static let codecMask: Int16 = 0x07
        public static let logAppendTime: Int16 = 0x08
        public static let transactional: Int16 = 0x10
        public static let control: Int16 = 0x20
        public static let deleteHorizon: Int16 = 0x40
    }

    /// Offset of the first record; producers send 0, the broker stamps it.
    public var baseOffset: Int64
    /// Bytes after the BatchLength field (total size minus 12).
    public var batchLength: Int32
    /// Leader epoch stamped by the broker; producers send -1.
    public var partitionLeaderEpoch: Int32
    /// Record format version; 2 for every batch this module accepts.
    public var magic: Int8
    /// CRC-32C of the bytes from Attributes to the end.
    public var crc: UInt32
    /// Codec, timestamp type, transactional, control and delete-horizon bits.
    public var attributes: Int16
    /// Offset of the last record minus BaseOffset.
    public var lastOffsetDelta: Int32
    /// Timestamp of the first record (the delete horizon when that bit is set).
    public var baseTimestamp: Int64
    /// Largest record timestamp, or the append time under LogAppendTime.
    public var maxTimestamp: Int64
    /// Idempotent/transactional producer id, -1 if none.
    public var producerId: Int64
    /// Producer epoch, -1 if none.
    public var producerEpoch: Int16
    /// Sequence of the first record, -1 if not idempotent.
    public var baseSequence: Int32
    /// Number of records in the batch.
    public var recordCount: Int32

    /// A header with the given fields; defaults describe an empty, producer-less batch.
    public init(
        baseOffset: Int64 = 0, batchLength: Int32 = RecordBatchHeader.minimumBatchLength,
        partitionLeaderEpoch: Int32 = -1, magic: Int8 = RecordBatchHeader.currentMagic, crc: UInt32 = 0,
        attributes: Int16 = 0, lastOffsetDelta: Int32 = 0, baseTimestamp: Int64 = -1, maxTimestamp: Int64 = -1,
        producerId: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1, recordCount: Int32 = 0
    ) {
        self.baseOffset = baseOffset
        self.batchLength = batchLength
        self.partitionLeaderEpoch = partitionLeaderEpoch
        self.magic = magic
        self.crc = crc
        self.attributes = attributes
        self.lastOffsetDelta = lastOffsetDelta
        self.baseTimestamp = baseTimestamp
        self.maxTimestamp = maxTimestamp
        self.producerId = producerId
        self.producerEpoch = producerEpoch
        self.baseSequence = baseSequence
        self.recordCount = recordCount
    }

    /// Reads the header at `index` without moving any index and without touching the records.
    /// Only the presence of 61 bytes is checked; field values are validated by `RecordBatch`.
    public init(from buffer: ByteBuffer, at index: Int) throws(RecordBatchError) {
        guard index >= buffer.readerIndex, index <= buffer.writerIndex - Self.size else {
            throw .corrupt("need \(Self.size) header bytes, have \(max(0, buffer.writerIndex - index))")
        }
        func get<T: FixedWidthInteger>(_ offset: Int, as: T.Type = T.self) -> T {
            // In range: the guard above covers all 61 bytes.
            buffer.getInteger(at: index + offset, endianness: .big, as: T.self) ?? 0
        }
        baseOffset = get(Offset.baseOffset)
        batchLength = get(Offset.batchLength)
        partitionLeaderEpoch = get(Offset.partitionLeaderEpoch)
        magic = get(Offset.magic)
        crc = get(Offset.crc)
        attributes = get(Offset.attributes)
        lastOffsetDelta = get(Offset.lastOffsetDelta)
        baseTimestamp = get(Offset.baseTimestamp)
        maxTimestamp = get(Offset.maxTimestamp)
        producerId = get(Offset.producerId)
        producerEpoch = get(Offset.producerEpoch)
        baseSequence = get(Offset.baseSequence)
        recordCount = get(Offset.recordCount)
    }

    /// Reads the header at the buffer's reader index without consuming anything.
    public init(from buffer: ByteBuffer) throws(RecordBatchError) {
        try self.init(from: buffer, at: buffer.readerIndex)
    }

    /// Appends the 61 header bytes exactly as stored (the CRC field is written as is).
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeKafkaInteger(baseOffset)
        buffer.writeKafkaInteger(batchLength)
        buffer.writeKafkaInteger(partitionLeaderEpoch)
        buffer.writeKafkaInteger(magic)
        buffer.writeKafkaInteger(crc)
        buffer.writeKafkaInteger(attributes)
        buffer.writeKafkaInteger(lastOffsetDelta)
        buffer.writeKafkaInteger(baseTimestamp)
        buffer.writeKafkaInteger(maxTimestamp)
        buffer.writeKafkaInteger(producerId)
        buffer.writeKafkaInteger(producerEpoch)
        buffer.writeKafkaInteger(baseSequence)
        buffer.writeKafkaInteger(recordCount)
    }

    /// Total bytes of the batch, header included.
    public var totalSize: Int { Int(batchLength) + Self.logOverhead }
    /// The codec, or nil when bits 0-2 hold an undefined value.
    public var codec: CompressionCodec? { CompressionCodec(rawValue: attributes & Attribute.codecMask) }
    /// The timestamp type from attribute bit 3.
    public var timestampType: TimestampType {
        attributes & Attribute.logAppendTime != 0 ? .logAppendTime : .createTime
    }
    /// Attribute bit 4: part of a transaction.
    public var isTransactional: Bool { attributes & Attribute.transactional != 0 }
    /// Attribute bit 5: holds control records (transaction markers).
    public var isControl: Bool { attributes & Attribute.control != 0 }
    /// Attribute bit 6: BaseTimestamp is the delete horizon (KIP-534).
    public var hasDeleteHorizon: Bool { attributes & Attribute.deleteHorizon != 0 }
    /// Offset of the last record (BaseOffset + LastOffsetDelta).
    public var lastOffset: Int64 { baseOffset &+ Int64(lastOffsetDelta) }
    /// The offset right after this batch.
    public var nextOffset: Int64 { lastOffset &+ 1 }
    /// Sequence number of the last record, wrapping at Int32.max like Kafka; -1 without a producer.
    public var lastSequence: Int32 {
        guard baseSequence >= 0 else { return -1 }
        let last = Int64(baseSequence) + Int64(lastOffsetDelta)
        return Int32(truncatingIfNeeded: last > Int64(Int32.max) ? last - Int64(Int32.max) - 1 : last)
    }
}
