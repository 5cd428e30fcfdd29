import ClusterMetadata
import CompactorCore
import NIOCore
import ObjectStorage

/// What must hold of a world whatever the compactor did or where it crashed.
extension CompactionWorld {
    /// Every committed object the metadata names is in the store with its recorded size, and every
    /// stream reads back from its objects exactly as written: blocks contiguous from at or below
    /// the log start to the committed end, each byte-identical to the batches uploaded at those offsets.
    func checkReadable() async throws {
        let state = controller.metadata
        for object in state.objects(in: .committed) {
            let key = ObjectKey.make(id: object.id, metadataCode: object.kind.rawValue)
            guard let info = try await store.head(key), info.size == Int(object.size) else {
                throw ClusterTestError("committed object \(object.id) (\(object.kind)) is missing or has the wrong size")
            }
        }
        let written = batches.withLock { $0 }
        for (streamId, stream) in state.streams.sorted(by: { $0.key < $1.key }) {
            var next: Int64?
            for location in state.objects(covering: streamId, from: stream.startOffset) {
                guard let object = state.objects[location.objectId] else { throw ClusterTestError("location names unknown object") }
                let key = ObjectKey.make(id: object.id, metadataCode: object.kind.rawValue)
                let bytes = try await store.get(key)
                let index = try ObjectIndex.decode(object: bytes)
                let entries = index.entries(stream: UInt64(streamId)).filter {
                    $0.endOffset > location.startOffset && $0.firstOffset < location.endOffset
                }
                for entry in entries {
                    if let next, entry.firstOffset != next {
                        throw ClusterTestError("stream \(streamId): block starts at \(entry.firstOffset), expected \(next)")
                    }
                    if next == nil, entry.firstOffset > stream.logStartOffset {
                        throw ClusterTestError("stream \(streamId): first block starts at \(entry.firstOffset), log start is \(stream.logStartOffset)")
                    }
                    let block = bytes.getSlice(at: bytes.readerIndex + Int(entry.position), length: Int(entry.length))!
                    try ObjectIndex.verify(block: block, entry: entry)
                    let expected = (written[streamId] ?? []).filter { $0.first >= entry.firstOffset && $0.end <= entry.endOffset }
                    guard expected.first?.first == entry.firstOffset, expected.last?.end == entry.endOffset,
                          Array(block.readableBytesView) == expected.flatMap(\.bytes)
                    else { throw ClusterTestError("stream \(streamId): block \(entry.firstOffset)..<\(entry.endOffset) differs from what was written") }
                    next = entry.endOffset
                }
            }
            let end = next ?? stream.startOffset
            guard end == stream.committedEnd else {
                throw ClusterTestError("stream \(streamId): objects end at \(end), committed end is \(stream.committedEnd)")
            }
        }
    }

    /// A reader holding `stale`, the metadata of time `since`, still finds every object it lists
    /// until the grace period has passed: whatever was destroyed since then was destroyed after `since`.
    func checkStaleReader(_ stale: MetadataState, since: Millis, grace: Millis) async throws {
        guard now - since < grace else { return }
        for object in stale.objects(in: .committed) {
            let key = ObjectKey.make(id: object.id, metadataCode: object.kind.rawValue)
            guard try await store.head(key) != nil else {
                throw ClusterTestError("object \(object.id) was deleted within the grace period of a reader that listed it")
            }
        }
    }

    /// After garbage collection has had its time: the store holds exactly the committed objects.
    func checkNoGarbage() async throws {
        let state = controller.metadata
        let expected = Set(state.objects(in: .committed).map { ObjectKey.make(id: $0.id, metadataCode: $0.kind.rawValue) })
        let stored = Set(try await store.list(prefix: "").map(\.key).filter { ObjectKey.parse($0) != nil })
        guard stored == expected else {
            throw ClusterTestError("store holds \(stored.subtracting(expected).count) unreferenced and lacks \(expected.subtracting(stored).count) objects")
        }
        guard state.objects(in: .prepared).isEmpty, state.objects(in: .destroyed).isEmpty else {
            throw ClusterTestError("metadata still has prepared or destroyed objects")
        }
    }

    /// Committed objects per kind.
    func objectCounts() -> [ObjectKind: Int] {
        var counts: [ObjectKind: Int] = [:]
        for object in controller.metadata.objects(in: .committed) { counts[object.kind, default: 0] += 1 }
        return counts
    }
}
