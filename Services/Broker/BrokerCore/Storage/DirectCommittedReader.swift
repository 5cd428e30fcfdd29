import ClusterMetadata
import KafkaRecords
import NIOCore
import ObjectStorage

/// Reads committed batches straight from object storage: one ranged GET for an object's index and
/// one per block, nothing cached. The broker's default is the cached reader; this one is its
/// baseline and the fallback when caching is turned off.
public struct DirectCommittedReader: CommittedDataReader {
    let reader: ObjectReader

    public init(store: any ObjectStore) {
        reader = ObjectReader(store: store)
    }

    public func readCommitted(stream: StreamID, from offset: Int64, maxBytes: Int, state: MetadataState) async throws -> ByteBuffer {
        var out = ByteBuffer()
        for location in state.objects(covering: stream, from: offset) {
            guard let object = state.objects[location.objectId] else { continue }
            let key = ObjectKey.make(id: UInt64(bitPattern: object.id), kind: object.kind.keyKind)
            let index = try await reader.index(key: key, objectSize: Int(object.size))
            for entry in index.entries(stream: UInt64(bitPattern: stream)) where entry.endOffset > offset {
                var block = try await reader.block(key: key, entry: entry)
                var iterator = RecordSetIterator(block)
                while let batch = try iterator.next() {
                    if batch.lastOffset < offset { continue }
                    if out.readableBytes > 0, out.readableBytes + batch.sizeInBytes > maxBytes { return out }
                    var bytes = batch.bytes
                    out.writeBuffer(&bytes)
                }
                block.clear()
            }
        }
        return out
    }
}

extension ObjectKind {
    /// The key prefix kind of objects of this kind.
    var keyKind: ObjectKey.Kind {
        switch self {
        case .streamSet: .streamSet
        case .stream: .stream
        case .routed: .routed
        }
    }
}
