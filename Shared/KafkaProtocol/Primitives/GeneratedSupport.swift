import NIOCore

// Helpers the generated codec calls. They keep the generated statements short and put the null,
// length and tag checks in one place.

extension ByteBuffer {
    /// Reads a string that must not be null.
    public mutating func readKafkaString(compact: Bool, field: String) throws(ProtocolError) -> String {
        guard let value = try readKafkaString(compact: compact) else { throw .unexpectedNull(field: field) }
        return value
    }

    /// Reads a string that may be null only when `nullable` holds.
    public mutating func readKafkaString(compact: Bool, nullable: Bool, field: String) throws(ProtocolError) -> String? {
        let value = try readKafkaString(compact: compact)
        if value == nil && !nullable { throw .unexpectedNull(field: field) }
        return value
    }

    /// Reads bytes that must not be null.
    public mutating func readKafkaBytes(compact: Bool, field: String) throws(ProtocolError) -> ByteBuffer {
        guard let value = try readKafkaBytes(compact: compact) else { throw .unexpectedNull(field: field) }
        return value
    }

    /// Reads bytes that may be null only when `nullable` holds.
    public mutating func readKafkaBytes(compact: Bool, nullable: Bool, field: String) throws(ProtocolError) -> ByteBuffer? {
        let value = try readKafkaBytes(compact: compact)
        if value == nil && !nullable { throw .unexpectedNull(field: field) }
        return value
    }

    /// Reads an array count that must not be null, bounded by the remaining input.
    public mutating func readArrayCount(compact: Bool, minimumElementSize: Int, field: String) throws(ProtocolError) -> Int {
        guard let count = try readArrayCount(compact: compact, minimumElementSize: Swift.max(1, minimumElementSize)) else {
            throw .unexpectedNull(field: field)
        }
        return count
    }

    /// Reads an array count that may be null only when `nullable` holds.
    public mutating func readArrayCount(
        compact: Bool, minimumElementSize: Int, nullable: Bool, field: String
    ) throws(ProtocolError) -> Int? {
        // Elements that can encode to zero bytes still count as one, so a count never exceeds the input size.
        let count = try readArrayCount(compact: compact, minimumElementSize: Swift.max(1, minimumElementSize))
        if count == nil && !nullable { throw .unexpectedNull(field: field) }
        return count
    }

    /// Reads the int8 presence marker of a nullable struct: -1 null, 1 present.
    public mutating func readStructPresence(field: String) throws(ProtocolError) -> Bool {
        let marker: Int8 = try readKafkaInteger()
        switch marker {
        case -1: return false
        case 1: return true
        default: throw .invalid("bad presence marker \(marker) for \(field)")
        }
    }

    /// Reads the count of a tagged-field section, bounded by the remaining input (each field takes two bytes or more).
    public mutating func readTaggedFieldCount() throws(ProtocolError) -> Int {
        let count = try readUnsignedVarint()
        guard Int(count) <= readableBytes / 2 else { throw .invalidLength(Int(count)) }
        return Int(count)
    }

    /// Reads one tagged field (tag, size, payload slice); tags must be strictly increasing.
    public mutating func readTaggedField(after previous: inout Int64) throws(ProtocolError) -> UnknownTaggedField {
        let tag = try readUnsignedVarint()
        guard Int64(tag) > previous else { throw .invalidTaggedField(tag: tag) }
        previous = Int64(tag)
        let size = try readUnsignedVarint()
        let payload = try readKafkaSlice(Int(size))
        return UnknownTaggedField(tag: tag, data: payload)
    }

    /// Reads a tagged-field section where no tag is known.
    public mutating func readUnknownTaggedFields() throws(ProtocolError) -> [UnknownTaggedField] {
        let count = try readTaggedFieldCount()
        var fields: [UnknownTaggedField] = []
        var previous: Int64 = -1
        for _ in 0..<count {
            fields.append(try readTaggedField(after: &previous))
        }
        return fields
    }

    /// Writes a string, refusing null outside `nullable` and lengths the encoding cannot carry.
    public mutating func writeKafkaString(_ value: String?, compact: Bool, nullable: Bool, field: String) throws(ProtocolError) {
        guard let value else {
            guard nullable else { throw .unexpectedNull(field: field) }
            writeLengthPrefix(nil, compact: compact, wide: false)
            return
        }
        let length = value.utf8.count
        guard length <= (compact ? Int(Int32.max) - 1 : Int(Int16.max)) else { throw .invalidLength(length) }
        writeLengthPrefix(length, compact: compact, wide: false)
        writeString(value)
    }

    /// Writes bytes, refusing null outside `nullable`.
    public mutating func writeKafkaBytes(_ value: ByteBuffer?, compact: Bool, nullable: Bool, field: String) throws(ProtocolError) {
        if value == nil && !nullable { throw .unexpectedNull(field: field) }
        writeKafkaBytes(value, compact: compact)
    }

    /// Writes a null array count, refusing it outside `nullable`.
    public mutating func writeNullArrayCount(compact: Bool, nullable: Bool, field: String) throws(ProtocolError) {
        guard nullable else { throw .unexpectedNull(field: field) }
        writeArrayCount(nil, compact: compact)
    }

    /// Writes a tagged-field section: the known fields (in tag order) merged with the preserved unknown ones.
    public mutating func writeTaggedFields(_ known: [UnknownTaggedField], unknown: [UnknownTaggedField]) throws(ProtocolError) {
        var merged: [UnknownTaggedField] = known
        if !unknown.isEmpty {
            merged.append(contentsOf: unknown)
            merged.sort { $0.tag < $1.tag }
        }
        var index = 1
        while index < merged.count {
            if merged[index].tag == merged[index - 1].tag { throw .invalidTaggedField(tag: merged[index].tag) }
            index += 1
        }
        writeUnsignedVarint(UInt32(merged.count))
        for field in merged {
            writeUnsignedVarint(field.tag)
            writeUnsignedVarint(UInt32(field.data.readableBytes))
            writeImmutableBuffer(field.data)
        }
    }
}
