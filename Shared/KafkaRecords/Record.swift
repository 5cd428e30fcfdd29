import KafkaProtocol
import NIOCore

/// One record header: a non-null UTF-8 key and an optional value.
public struct RecordHeader: Hashable, Sendable {
    /// The header name (UTF-8, never null).
    public var key: String
    /// The header value; nil is a null value.
    public var value: ByteBuffer?

    /// A header with the given key and value.
    public init(key: String, value: ByteBuffer?) {
        self.key = key
        self.value = value
    }
}

/// One record inside a v2 batch; key, value and header values are slices of the batch payload.
public struct Record: Hashable, Sendable {
    /// Unused by Kafka; kept so a record re-encodes byte for byte.
    public var attributes: Int8
    /// Timestamp minus the batch's BaseTimestamp (may be negative).
    public var timestampDelta: Int64
    /// Offset minus the batch's BaseOffset.
    public var offsetDelta: Int32
    /// The key; nil is a null key.
    public var key: ByteBuffer?
    /// The value; nil is a null value (a tombstone).
    public var value: ByteBuffer?
    /// Record headers in wire order.
    public var headers: [RecordHeader]

    /// A record with explicit deltas.
    public init(
        attributes: Int8 = 0, timestampDelta: Int64, offsetDelta: Int32, key: ByteBuffer?, value: ByteBuffer?,
        headers: [RecordHeader] = []
    ) {
        self.attributes = attributes
        self.timestampDelta = timestampDelta
        self.offsetDelta = offsetDelta
        self.key = key
        self.value = value
        self.headers = headers
    }

    /// The record's absolute offset in the batch's partition.
    public func offset(in batch: RecordBatchHeader) -> Int64 {
        batch.baseOffset &+ Int64(offsetDelta)
    }

    /// The record's timestamp: the batch's MaxTimestamp under LogAppendTime, else base + delta.
    public func timestamp(in batch: RecordBatchHeader) -> Int64 {
        batch.timestampType == .logAppendTime ? batch.maxTimestamp : batch.baseTimestamp &+ timestampDelta
    }

    /// The smallest possible encoding: length, attributes, three deltas/lengths and a header count.
    static let minimumEncodedSize = 7

    // MARK: Decoding

    /// Reads one length-prefixed record; slices share the input's storage.
    static func read(from buffer: inout ByteBuffer) throws(ProtocolError) -> Record {
        let length = Int(try buffer.readVarint())
        guard length >= 0 else { throw .invalidLength(length) }
        var body = try buffer.readKafkaSlice(length)
        let attributes: Int8 = try body.readKafkaInteger()
        let timestampDelta = try body.readVarlong()
        let offsetDelta = try body.readVarint()
        let key = try readNullableBytes(&body)
        let value = try readNullableBytes(&body)
        let headerCount = Int(try body.readVarint())
        // Each header takes at least two bytes, so this bounds the allocation by the input.
        guard headerCount >= 0, headerCount <= body.readableBytes / 2 else { throw .invalidLength(headerCount) }
        var headers: [RecordHeader] = []
        headers.reserveCapacity(headerCount)
        for _ in 0..<headerCount {
            let keyLength = Int(try body.readVarint())
            guard keyLength >= 0 else { throw .invalid("record header key length \(keyLength)") }
            let headerKey = try body.readKafkaUTF8(keyLength)
            headers.append(RecordHeader(key: headerKey, value: try readNullableBytes(&body)))
        }
        guard body.readableBytes == 0 else {
            throw .invalid("record length \(length) leaves \(body.readableBytes) unread bytes")
        }
        return Record(
            attributes: attributes, timestampDelta: timestampDelta, offsetDelta: offsetDelta, key: key, value: value,
            headers: headers)
    }

    private static func readNullableBytes(_ buffer: inout ByteBuffer) throws(ProtocolError) -> ByteBuffer? {
        let length = Int(try buffer.readVarint())
        if length == -1 { return nil }
        guard length >= 0 else { throw .invalidLength(length) }
        return try buffer.readKafkaSlice(length)
    }

    // MARK: Encoding

    static func zigZagSize(_ value: Int64) -> Int {
        var raw = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        var size = 1
        while raw >= 0x80 {
            raw >>= 7
            size += 1
        }
        return size
    }

    private static func nullableSize(_ bytes: ByteBuffer?) -> Int {
        guard let bytes else { return 1 }
        return zigZagSize(Int64(bytes.readableBytes)) + bytes.readableBytes
    }

    /// Bytes of the record after its length prefix.
    var bodySize: Int {
        var size = 1 + Self.zigZagSize(timestampDelta) + Self.zigZagSize(Int64(offsetDelta))
        size += Self.nullableSize(key) + Self.nullableSize(value) + Self.zigZagSize(Int64(headers.count))
        for header in headers {
            let keyBytes = header.key.utf8.count
            size += Self.zigZagSize(Int64(keyBytes)) + keyBytes + Self.nullableSize(header.value)
        }
        return size
    }

    /// Appends the length-prefixed encoding. Returns false (writing nothing) when a length does
    /// not fit the varint fields.
    @discardableResult
    func write(to buffer: inout ByteBuffer) -> Bool {
        let size = bodySize
        guard size <= Int(Int32.max) else { return false }
        buffer.reserveCapacity(minimumWritableBytes: size + 5)
        buffer.writeVarint(Int32(size))
        buffer.writeKafkaInteger(attributes)
        buffer.writeVarlong(timestampDelta)
        buffer.writeVarint(offsetDelta)
        Self.writeNullable(key, to: &buffer)
        Self.writeNullable(value, to: &buffer)
        buffer.writeVarint(Int32(headers.count))
        for header in headers {
            buffer.writeVarint(Int32(header.key.utf8.count))
            buffer.writeString(header.key)
            Self.writeNullable(header.value, to: &buffer)
        }
        return true
    }

    private static func writeNullable(_ bytes: ByteBuffer?, to buffer: inout ByteBuffer) {
        guard let bytes else {
            buffer.writeVarint(-1)
            return
        }
        buffer.writeVarint(Int32(bytes.readableBytes))
        buffer.writeImmutableBuffer(bytes)
    }
}
