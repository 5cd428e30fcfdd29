import ClusterMetadata
import ObjectStorage

/// Which streams and stream-set objects one compactor works on. The active compactors registered at
/// the controller, in node-id order, split both by id modulo their count; the first of them also
/// collects garbage. Two compactors that briefly disagree on the membership may pick the same sources;
/// the controller then accepts only the first commit (its sources are destroyed), so the overlap costs
/// work and a prepared object that garbage collection removes, never data.
public struct CompactorShard: Sendable, Hashable {
    public let rank: Int
    public let count: Int

    public init(rank: Int, count: Int) {
        precondition(count > 0 && (0..<count).contains(rank), "rank \(rank) outside 0..<\(count)")
        self.rank = rank
        self.count = count
    }

    /// This node's share, or nil while it is not an active registered compactor.
    public init?(state: MetadataState, nodeId: NodeID) {
        let active = state.sortedNodes.filter { $0.kind == .compactor && $0.state == .active }
        guard let rank = active.firstIndex(where: { $0.id == nodeId }) else { return nil }
        self.init(rank: rank, count: active.count)
    }

    /// Whether this compactor runs expiry, deletion and the orphan scan.
    public var collectsGarbage: Bool { rank == 0 }

    public func owns(stream: StreamID) -> Bool { Int(UInt64(bitPattern: stream) % UInt64(count)) == rank }
    public func owns(object: ObjectID) -> Bool { Int(UInt64(bitPattern: object) % UInt64(count)) == rank }
}

/// One block of one stream as it sits in an object.
public struct StoredBlock: Sendable, Hashable {
    public var objectId: ObjectID
    public var kind: ObjectKind
    /// When the object was committed: the block's age when its batches carry no timestamp.
    public var committedAt: Millis
    public var entry: BlockIndexEntry

    public init(objectId: ObjectID, kind: ObjectKind, committedAt: Millis, entry: BlockIndexEntry) {
        self.objectId = objectId
        self.kind = kind
        self.committedAt = committedAt
        self.entry = entry
    }

    public var startOffset: Int64 { entry.firstOffset }
    public var endOffset: Int64 { entry.endOffset }
    public var bytes: Int { Int(entry.length) }
}

/// Pure decisions of a compaction pass: what to split, what to merge, how far retention trims.
public enum CompactionPlanner {
    /// The committed stream-set objects this shard splits in one pass: oldest id first, until their
    /// bytes would pass `maxBytes` (at least one).
    public static func splitSources(_ state: MetadataState, shard: CompactorShard, maxBytes: Int) -> [ObjectRecord] {
        var chosen: [ObjectRecord] = []
        var bytes: Int64 = 0
        for object in state.objects(in: .committed) where object.kind == .streamSet && shard.owns(object: object.id) {
            if !chosen.isEmpty, bytes + object.size > Int64(maxBytes) { break }
            chosen.append(object)
            bytes += object.size
        }
        return chosen
    }

    /// Runs of a stream's consecutive small stream objects worth rewriting as one: a run closes at
    /// any other object, or once it reaches `targetBytes`; it is merged when it reached the target
    /// with two or more members, or has `minObjects` members.
    public static func mergeRuns(_ state: MetadataState, stream: StreamID, targetBytes: Int, minObjects: Int) -> [[ObjectRecord]] {
        var runs: [[ObjectRecord]] = []
        var run: [ObjectRecord] = []
        var runBytes: Int64 = 0
        var seen: Set<ObjectID> = []
        func close() {
            if run.count >= 2, run.count >= minObjects || runBytes >= Int64(targetBytes) { runs.append(run) }
            run = []
            runBytes = 0
        }
        for location in state.objects(covering: stream, from: 0) where seen.insert(location.objectId).inserted {
            guard let object = state.objects[location.objectId], object.kind == .stream, object.size < Int64(targetBytes) else {
                close()
                continue
            }
            run.append(object)
            runBytes += object.size
            if runBytes >= Int64(targetBytes) { close() }
        }
        close()
        return runs
    }

    /// A stream's reachable blocks in offset order, from the indexes of the objects its locations name.
    /// Throws when an index lacks blocks the metadata says the object holds.
    public static func blocks(
        of stream: StreamRecord, in state: MetadataState, indexes: [ObjectID: ObjectIndex], only sources: Set<ObjectID>? = nil
    ) throws(CompactorError) -> [StoredBlock] {
        var blocks: [StoredBlock] = []
        for location in state.objects(covering: stream.id, from: stream.startOffset) {
            if let sources, !sources.contains(location.objectId) { continue }
            guard let object = state.objects[location.objectId], let index = indexes[location.objectId] else {
                throw .inconsistent("no index for object \(location.objectId) of stream \(stream.id)")
            }
            let entries = index.entries(stream: UInt64(bitPattern: stream.id)).filter {
                $0.endOffset > location.startOffset && $0.firstOffset < location.endOffset && $0.endOffset > stream.startOffset
            }
            guard let first = entries.first, let last = entries.last,
                  first.firstOffset <= max(location.startOffset, stream.startOffset), last.endOffset >= location.endOffset
            else {
                throw .inconsistent("object \(location.objectId) lacks blocks for stream \(stream.id) offsets \(location.startOffset)..<\(location.endOffset)")
            }
            blocks += entries.map { StoredBlock(objectId: object.id, kind: object.kind, committedAt: object.committedAt, entry: $0) }
        }
        return blocks.sorted { ($0.startOffset, $0.objectId) < ($1.startOffset, $1.objectId) }
    }

    /// Cuts one stream's blocks (offset order) into outputs of about `targetBytes` each.
    public static func cut(_ blocks: [StoredBlock], targetBytes: Int) -> [[StoredBlock]] {
        var outputs: [[StoredBlock]] = []
        var current: [StoredBlock] = []
        var bytes = 0
        for block in blocks {
            if !current.isEmpty, bytes + block.bytes > targetBytes {
                outputs.append(current)
                current = []
                bytes = 0
            }
            current.append(block)
            bytes += block.bytes
        }
        if !current.isEmpty { outputs.append(current) }
        return outputs
    }

    /// The offset ranges an output made of `blocks` holds: the blocks' ranges, adjacent ones joined.
    public static func ranges(of blocks: [StoredBlock], stream: StreamID, epoch: LeaderEpoch) -> [StreamRange] {
        var ranges: [StreamRange] = []
        for block in blocks {
            if let last = ranges.last, last.endOffset == block.startOffset {
                ranges[ranges.count - 1].endOffset = block.endOffset
            } else {
                ranges.append(StreamRange(streamId: stream, epoch: epoch, startOffset: block.startOffset, endOffset: block.endOffset))
            }
        }
        return ranges
    }

    /// The log start offset retention moves a stream to, or nil when nothing expires. Whole blocks
    /// go, oldest first: while their newest batch is older than `retention.ms` (a block without
    /// timestamps counts from its object's commit), and while the blocks after them still hold
    /// `retention.bytes`.
    public static func retentionStart(_ blocks: [StoredBlock], policy: RetentionPolicy, now: Millis, logStart: Int64) -> Int64? {
        guard policy.limitsSomething else { return nil }
        var remaining = blocks.reduce(0) { $0 + Int64($1.bytes) }
        var start: Int64?
        for block in blocks {
            let stamp = block.entry.maxTimestamp >= 0 ? block.entry.maxTimestamp : block.committedAt
            let expired = policy.retentionMillis >= 0 && now - stamp > policy.retentionMillis
            let oversized = policy.retentionBytes >= 0 && remaining - Int64(block.bytes) >= policy.retentionBytes
            guard expired || oversized else { break }
            start = block.endOffset
            remaining -= Int64(block.bytes)
        }
        guard let start, start > logStart else { return nil }
        return start
    }
}
