import KafkaProtocol
import NIOCore

/// Wire form of `MetadataResult` in ControllerWrite responses and in snapshots' remembered writes (tag byte, then
/// the case's fields).
extension MetadataResult {
    private enum Tag: UInt8 {
        case ok = 0, error = 1, nodeRegistered = 2, items = 3, objectPrepared = 4, objectsExpired = 5, producerIds = 6
    }

    /// Encodes the result for a ControllerWrite response.
    public func encode() -> ByteBuffer {
        var buffer = ByteBuffer()
        switch self {
        case .ok:
            buffer.writeKafkaInteger(Tag.ok.rawValue)
        case let .error(error):
            buffer.writeKafkaInteger(Tag.error.rawValue)
            buffer.writeKafkaInteger(error.code)
            buffer.writeKafkaString(error.message, compact: true)
        case let .nodeRegistered(incarnation):
            buffer.writeKafkaInteger(Tag.nodeRegistered.rawValue)
            buffer.writeKafkaInteger(incarnation)
        case let .items(items):
            buffer.writeKafkaInteger(Tag.items.rawValue)
            buffer.writeArrayCount(items.count, compact: true)
            for item in items {
                buffer.writeKafkaString(item.name, compact: true)
                buffer.writeKafkaInteger(item.partition)
                buffer.writeKafkaInteger(item.errorCode)
                buffer.writeKafkaString(item.message, compact: true)
            }
        case let .objectPrepared(id):
            buffer.writeKafkaInteger(Tag.objectPrepared.rawValue)
            buffer.writeKafkaInteger(id)
        case let .objectsExpired(ids):
            buffer.writeKafkaInteger(Tag.objectsExpired.rawValue)
            buffer.writeArrayCount(ids.count, compact: true)
            for id in ids { buffer.writeKafkaInteger(id) }
        case let .producerIds(firstId, count):
            buffer.writeKafkaInteger(Tag.producerIds.rawValue)
            buffer.writeKafkaInteger(firstId)
            buffer.writeKafkaInteger(count)
        }
        return buffer
    }

    /// Decodes a result written by `encode()`; malformed bytes throw, never trap.
    public init(decoding bytes: ByteBuffer) throws(ProtocolError) {
        var buffer = bytes
        let raw: UInt8 = try buffer.readKafkaInteger()
        guard let tag = Tag(rawValue: raw) else { throw .invalid("unknown metadata result tag \(raw)") }
        switch tag {
        case .ok:
            self = .ok
        case .error:
            let code: Int16 = try buffer.readKafkaInteger()
            let message = try buffer.readKafkaString(compact: true) ?? ""
            self = .error(MetadataError(code, message))
        case .nodeRegistered:
            self = .nodeRegistered(incarnation: try buffer.readKafkaInteger())
        case .items:
            let count = try buffer.readArrayCount(compact: true, minimumElementSize: 8) ?? 0
            var items: [ItemResult] = []
            items.reserveCapacity(min(count, 1024))
            for _ in 0..<count {
                let name = try buffer.readKafkaString(compact: true) ?? ""
                let partition: Int32 = try buffer.readKafkaInteger()
                let code: Int16 = try buffer.readKafkaInteger()
                let message = try buffer.readKafkaString(compact: true)
                items.append(ItemResult(name: name, partition: partition, errorCode: code, message: message))
            }
            self = .items(items)
        case .objectPrepared:
            self = .objectPrepared(try buffer.readKafkaInteger())
        case .objectsExpired:
            let count = try buffer.readArrayCount(compact: true, minimumElementSize: 8) ?? 0
            var ids: [ObjectID] = []
            ids.reserveCapacity(min(count, 1024))
            for _ in 0..<count { ids.append(try buffer.readKafkaInteger()) }
            self = .objectsExpired(ids)
        case .producerIds:
            let first: Int64 = try buffer.readKafkaInteger()
            let count: Int32 = try buffer.readKafkaInteger()
            self = .producerIds(firstId: first, count: count)
        }
        guard buffer.readableBytes == 0 else { throw .invalid("\(buffer.readableBytes) trailing bytes after metadata result") }
    }
}
