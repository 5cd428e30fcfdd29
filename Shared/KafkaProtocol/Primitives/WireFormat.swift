import NIOCore

/// A failure to decode or encode Kafka wire data. Decoders never trap on bad input; they throw this.
public enum ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input ended before a value was complete.
    case truncated(needed: Int, available: Int)
    /// A length or count prefix is negative (where null is not allowed) or larger than the input.
    case invalidLength(Int)
    /// A varint ran past its maximum width.
    case malformedVarint
    /// A string field was not valid UTF-8.
    case invalidUTF8
    /// The (api key, version) pair is unknown.
    case unsupportedVersion(apiKey: Int16, version: Int16)
    /// A null arrived (or is being written) where the version does not allow one.
    case unexpectedNull(field: String)
    /// A non-ignorable field holds a value the version being written cannot carry.
    case fieldNotRepresentable(field: String, version: Int16)
    /// Tagged fields were not in strictly increasing order, or a known tag had the wrong size.
    case invalidTaggedField(tag: UInt32)
    /// Anything else, with a human-readable reason.
    case invalid(String)

    public var description: String {
        switch self {
        case let .truncated(needed, available): "truncated input: needed \(needed) bytes, \(available) available"
        case let .invalidLength(length): "invalid length or count \(length)"
        case .malformedVarint: "malformed varint"
        case .invalidUTF8: "string is not valid UTF-8"
        case let .unsupportedVersion(apiKey, version): "unsupported version \(version) of api key \(apiKey)"
        case let .unexpectedNull(field): "null not allowed for \(field)"
        case let .fieldNotRepresentable(field, version): "\(field) cannot be written at version \(version)"
        case let .invalidTaggedField(tag): "invalid tagged field \(tag)"
        case let .invalid(reason): reason
        }
    }
}

/// A 16-byte Kafka uuid (topic ids and the like). All zero means "no id".
public struct KafkaUUID: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The all-zero uuid Kafka uses for "none".
    public static let zero = KafkaUUID(high: 0, low: 0)

    /// A random version-4 uuid.
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> KafkaUUID {
        let high = (generator.next() & ~0xF000) | 0x4000
        let low = (generator.next() & ~(0xC000_0000_0000_0000 as UInt64)) | 0x8000_0000_0000_0000
        return KafkaUUID(high: high, low: low)
    }

    /// A random version-4 uuid from the system generator.
    public static func random() -> KafkaUUID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    public var description: String {
        func hex(_ value: UInt64, _ digits: Int) -> String {
            let raw = String(value, radix: 16)
            return String(repeating: "0", count: max(0, digits - raw.count)) + raw
        }
        let h = hex(high, 16), l = hex(low, 16)
        return "\(h.prefix(8))-\(h.dropFirst(8).prefix(4))-\(h.suffix(4))-\(l.prefix(4))-\(l.suffix(12))"
    }
}

/// A tagged field the decoder did not know, kept so re-encoding reproduces it.
public struct UnknownTaggedField: Hashable, Sendable {
    public var tag: UInt32
    public var data: ByteBuffer

    public init(tag: UInt32, data: ByteBuffer) {
        self.tag = tag
        self.data = data
    }
}

// MARK: - Reading

extension ByteBuffer {
    @inline(__always)
    func ensureReadable(_ count: Int) throws(ProtocolError) {
        guard count >= 0 else { throw .invalidLength(count) }
        guard readableBytes >= count else { throw .truncated(needed: count, available: readableBytes) }
    }

    /// Reads a big-endian fixed-width integer or throws if the input is short.
    @inlinable
    public mutating func readKafkaInteger<T: FixedWidthInteger>(as: T.Type = T.self) throws(ProtocolError) -> T {
        guard let value = readInteger(endianness: .big, as: T.self) else {
            throw .truncated(needed: MemoryLayout<T>.size, available: readableBytes)
        }
        return value
    }

    public mutating func readKafkaBool() throws(ProtocolError) -> Bool {
        try readKafkaInteger(as: UInt8.self) != 0
    }

    public mutating func readKafkaFloat64() throws(ProtocolError) -> Double {
        Double(bitPattern: try readKafkaInteger(as: UInt64.self))
    }

    public mutating func readKafkaUUID() throws(ProtocolError) -> KafkaUUID {
        let high: UInt64 = try readKafkaInteger()
        let low: UInt64 = try readKafkaInteger()
        return KafkaUUID(high: high, low: low)
    }

    /// Reads an unsigned LEB128 varint of at most 32 bits (5 bytes).
    @inlinable
    public mutating func readUnsignedVarint() throws(ProtocolError) -> UInt32 {
        try readLEB128(as: UInt32.self)
    }

    /// Reads an unsigned LEB128 varint of at most 64 bits (10 bytes).
    @inlinable
    public mutating func readUnsignedVarlong() throws(ProtocolError) -> UInt64 {
        try readLEB128(as: UInt64.self)
    }

    /// Reads an unsigned LEB128 value of `T`'s width; a last byte with bits beyond that width (or another
    /// continuation) is malformed rather than silently truncated.
    @inlinable
    mutating func readLEB128<T: FixedWidthInteger & UnsignedInteger>(as: T.Type) throws(ProtocolError) -> T {
        let lastShift = (T.bitWidth - 1) / 7 * 7
        var result: T = 0
        var shift = 0
        while true {
            guard let byte = readInteger(as: UInt8.self) else {
                throw .truncated(needed: 1, available: 0)
            }
            if shift == lastShift && byte >> (T.bitWidth - lastShift) != 0 { throw .malformedVarint }
            result |= T(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// Reads a zig-zag signed varint (record format).
    @inlinable
    public mutating func readVarint() throws(ProtocolError) -> Int32 {
        let raw = try readUnsignedVarint()
        return Int32(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// Reads a zig-zag signed varlong (record format).
    @inlinable
    public mutating func readVarlong() throws(ProtocolError) -> Int64 {
        let raw = try readUnsignedVarlong()
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// Reads `count` bytes as a zero-copy slice of this buffer.
    @inlinable
    public mutating func readKafkaSlice(_ count: Int) throws(ProtocolError) -> ByteBuffer {
        guard count >= 0 else { throw .invalidLength(count) }
        guard let slice = readSlice(length: count) else {
            throw .truncated(needed: count, available: readableBytes)
        }
        return slice
    }

    /// Reads `count` bytes as a UTF-8 string, validating the encoding.
    public mutating func readKafkaUTF8(_ count: Int) throws(ProtocolError) -> String {
        try ensureReadable(count)
        let string = readableBytesView.prefix(count).withContiguousStorageIfAvailable { bytes in
            String(validating: bytes, as: UTF8.self)
        } ?? String(validating: readableBytesView.prefix(count), as: UTF8.self)
        guard let string else { throw .invalidUTF8 }
        moveReaderIndex(forwardBy: count)
        return string
    }

    /// Reads a length prefix: int16/int32 in classic encodings, uvarint(N+1) in compact ones.
    /// Returns nil for null (-1 classic, 0 compact). Lengths larger than the remaining input throw.
    @inlinable
    public mutating func readLengthPrefix(compact: Bool, wide: Bool) throws(ProtocolError) -> Int? {
        let length: Int
        if compact {
            let raw = try readUnsignedVarint()
            if raw == 0 { return nil }
            length = Int(raw) - 1
        } else if wide {
            let raw: Int32 = try readKafkaInteger()
            if raw == -1 { return nil }
            length = Int(raw)
        } else {
            let raw: Int16 = try readKafkaInteger()
            if raw == -1 { return nil }
            length = Int(raw)
        }
        guard length >= 0 else { throw .invalidLength(length) }
        return length
    }

    /// Reads a string (int16 length, or compact). Nil means the wire carried null.
    public mutating func readKafkaString(compact: Bool) throws(ProtocolError) -> String? {
        guard let length = try readLengthPrefix(compact: compact, wide: false) else { return nil }
        return try readKafkaUTF8(length)
    }

    /// Reads bytes (int32 length, or compact) as a zero-copy slice. Nil means null.
    public mutating func readKafkaBytes(compact: Bool) throws(ProtocolError) -> ByteBuffer? {
        guard let length = try readLengthPrefix(compact: compact, wide: true) else { return nil }
        return try readKafkaSlice(length)
    }

    /// Reads an array count (int32, or compact). Nil means null. A count that could not possibly fit in
    /// the remaining input (each element takes at least `minimumElementSize` bytes) throws before
    /// anything is allocated.
    public mutating func readArrayCount(compact: Bool, minimumElementSize: Int = 1) throws(ProtocolError) -> Int? {
        guard let count = try readLengthPrefix(compact: compact, wide: true) else { return nil }
        if minimumElementSize > 0, count > readableBytes / minimumElementSize {
            throw .invalidLength(count)
        }
        return count
    }

    /// Reads a tagged-field section, calling `known` for each tag; tags `known` does not consume
    /// (returns false) are kept as unknown. Tags must be strictly increasing.
    public mutating func readTaggedFields(
        _ known: (UInt32, inout ByteBuffer) throws(ProtocolError) -> Bool
    ) throws(ProtocolError) -> [UnknownTaggedField] {
        let count = try readUnsignedVarint()
        guard count > 0 else { return [] }
        guard Int(count) <= readableBytes / 2 else { throw .invalidLength(Int(count)) }
        var unknown: [UnknownTaggedField] = []
        var previous: Int64 = -1
        for _ in 0..<count {
            let tag = try readUnsignedVarint()
            guard Int64(tag) > previous else { throw .invalidTaggedField(tag: tag) }
            previous = Int64(tag)
            let size = try readUnsignedVarint()
            var payload = try readKafkaSlice(Int(size))
            if try known(tag, &payload) {
                guard payload.readableBytes == 0 else { throw .invalidTaggedField(tag: tag) }
            } else {
                unknown.append(UnknownTaggedField(tag: tag, data: payload))
            }
        }
        return unknown
    }
}

// MARK: - Writing

extension ByteBuffer {
    @inlinable
    public mutating func writeKafkaInteger<T: FixedWidthInteger>(_ value: T) {
        writeInteger(value, endianness: .big)
    }

    public mutating func writeKafkaBool(_ value: Bool) {
        writeInteger(UInt8(value ? 1 : 0))
    }

    public mutating func writeKafkaFloat64(_ value: Double) {
        writeInteger(value.bitPattern, endianness: .big)
    }

    public mutating func writeKafkaUUID(_ value: KafkaUUID) {
        writeInteger(value.high, endianness: .big)
        writeInteger(value.low, endianness: .big)
    }

    @inlinable
    public mutating func writeUnsignedVarint(_ value: UInt32) {
        writeLEB128(value)
    }

    @inlinable
    public mutating func writeUnsignedVarlong(_ value: UInt64) {
        writeLEB128(value)
    }

    @inlinable
    mutating func writeLEB128<T: FixedWidthInteger & UnsignedInteger>(_ value: T) {
        var value = value
        while value >= 0x80 {
            writeInteger(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        writeInteger(UInt8(value))
    }

    /// Writes a zig-zag signed varint (record format).
    @inlinable
    public mutating func writeVarint(_ value: Int32) {
        writeUnsignedVarint(UInt32(bitPattern: (value << 1) ^ (value >> 31)))
    }

    /// Writes a zig-zag signed varlong (record format).
    @inlinable
    public mutating func writeVarlong(_ value: Int64) {
        writeUnsignedVarlong(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    /// Writes a length prefix; nil writes null.
    @inlinable
    public mutating func writeLengthPrefix(_ length: Int?, compact: Bool, wide: Bool) {
        if compact {
            writeUnsignedVarint(length.map { UInt32($0 + 1) } ?? 0)
        } else if wide {
            writeInteger(Int32(length ?? -1), endianness: .big)
        } else {
            writeInteger(Int16(length ?? -1), endianness: .big)
        }
    }

    /// Writes a string (int16 length, or compact); nil writes null.
    public mutating func writeKafkaString(_ value: String?, compact: Bool) {
        guard let value else {
            writeLengthPrefix(nil, compact: compact, wide: false)
            return
        }
        writeLengthPrefix(value.utf8.count, compact: compact, wide: false)
        writeString(value)
    }

    /// Writes bytes (int32 length, or compact); nil writes null.
    public mutating func writeKafkaBytes(_ value: ByteBuffer?, compact: Bool) {
        guard let value else {
            writeLengthPrefix(nil, compact: compact, wide: true)
            return
        }
        writeLengthPrefix(value.readableBytes, compact: compact, wide: true)
        writeImmutableBuffer(value)
    }

    /// Writes an array count (int32, or compact); nil writes null.
    public mutating func writeArrayCount(_ count: Int?, compact: Bool) {
        writeLengthPrefix(count, compact: compact, wide: true)
    }

    /// Number of bytes `writeUnsignedVarint(value)` produces.
    @inlinable
    public static func unsignedVarintSize(_ value: UInt32) -> Int {
        var value = value
        var size = 1
        while value >= 0x80 {
            value >>= 7
            size += 1
        }
        return size
    }
}
