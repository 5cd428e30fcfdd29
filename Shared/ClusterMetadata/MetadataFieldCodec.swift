import KafkaProtocol
import NIOCore

// MARK: - Field helpers shared by commands and snapshots

extension ByteBuffer {
    mutating func writeMetaString(_ value: String) { writeKafkaString(value, compact: true) }

    mutating func readMetaString() throws(ProtocolError) -> String {
        guard let value = try readKafkaString(compact: true) else { throw .unexpectedNull(field: "string") }
        return value
    }

    mutating func writeOptionalMetaString(_ value: String?) { writeKafkaString(value, compact: true) }

    mutating func readOptionalMetaString() throws(ProtocolError) -> String? {
        try readKafkaString(compact: true)
    }

    /// Count of a list whose elements each take at least `minimumSize` bytes.
    mutating func readMetaCount(minimumSize: Int) throws(ProtocolError) -> Int {
        let raw = try readUnsignedVarint()
        let count = Int(raw)
        guard count <= readableBytes / max(1, minimumSize) else { throw .invalidLength(count) }
        return count
    }

    mutating func writeMetaCount(_ count: Int) { writeUnsignedVarint(UInt32(truncatingIfNeeded: count)) }

    mutating func readMetaEnum<E: RawRepresentable>(_: E.Type) throws(ProtocolError) -> E where E.RawValue == UInt8 {
        let raw: UInt8 = try readKafkaInteger()
        guard let value = E(rawValue: raw) else { throw .invalid("unknown \(E.self) \(raw)") }
        return value
    }

    /// A string map written in sorted key order so equal maps encode to equal bytes.
    mutating func writeStringMap(_ map: [String: String]) {
        writeMetaCount(map.count)
        for key in map.keys.sorted() {
            writeMetaString(key)
            writeMetaString(map[key] ?? "")
        }
    }

    mutating func readStringMap() throws(ProtocolError) -> [String: String] {
        let count = try readMetaCount(minimumSize: 2)
        var map: [String: String] = [:]
        for _ in 0..<count {
            let key = try readMetaString()
            let value = try readMetaString()
            guard map.updateValue(value, forKey: key) == nil else { throw .invalid("duplicate key \(key)") }
        }
        return map
    }

    mutating func writeIDList(_ ids: [Int64]) {
        writeMetaCount(ids.count)
        for id in ids { writeVarlong(id) }
    }

    mutating func readIDList() throws(ProtocolError) -> [Int64] {
        let count = try readMetaCount(minimumSize: 1)
        var ids: [Int64] = []
        ids.reserveCapacity(count)
        for _ in 0..<count { ids.append(try readVarlong()) }
        return ids
    }

    mutating func writeRange(_ range: StreamRange) {
        writeVarlong(range.streamId)
        writeVarint(range.epoch)
        writeVarlong(range.startOffset)
        writeVarlong(range.endOffset)
    }

    mutating func readRange() throws(ProtocolError) -> StreamRange {
        StreamRange(
            streamId: try readVarlong(), epoch: try readVarint(),
            startOffset: try readVarlong(), endOffset: try readVarlong())
    }

    mutating func writeRanges(_ ranges: [StreamRange]) {
        writeMetaCount(ranges.count)
        for range in ranges { writeRange(range) }
    }

    mutating func readRanges() throws(ProtocolError) -> [StreamRange] {
        let count = try readMetaCount(minimumSize: 4)
        var ranges: [StreamRange] = []
        ranges.reserveCapacity(count)
        for _ in 0..<count { ranges.append(try readRange()) }
        return ranges
    }

    mutating func writeObjectCommit(_ commit: ObjectCommit) {
        writeVarlong(commit.objectId)
        writeVarlong(commit.size)
        writeRanges(commit.ranges)
    }

    mutating func readObjectCommit() throws(ProtocolError) -> ObjectCommit {
        ObjectCommit(objectId: try readVarlong(), size: try readVarlong(), ranges: try readRanges())
    }

    mutating func writeRegistration(_ node: NodeRegistration) {
        writeVarint(node.id)
        writeInteger(node.kind.rawValue)
        writeMetaString(node.zone)
        writeMetaString(node.listener)
        writeMetaString(node.admin)
    }

    mutating func readRegistration() throws(ProtocolError) -> NodeRegistration {
        NodeRegistration(
            id: try readVarint(), kind: try readMetaEnum(NodeKind.self), zone: try readMetaString(),
            listener: try readMetaString(), admin: try readMetaString())
    }

    mutating func writeNodeIDs(_ ids: [NodeID]) {
        writeMetaCount(ids.count)
        for id in ids { writeVarint(id) }
    }

    mutating func readNodeIDs() throws(ProtocolError) -> [NodeID] {
        let count = try readMetaCount(minimumSize: 1)
        var ids: [NodeID] = []
        ids.reserveCapacity(count)
        for _ in 0..<count { ids.append(try readVarint()) }
        return ids
    }
}
