import ClusterMetadata
import Logging
import NIOCore
import ObjectStorage

/// What one pass did.
public struct PassReport: Sendable, Hashable {
    /// Stream-set objects rewritten as stream objects.
    public var splitSources = 0
    /// Stream objects merged into larger ones.
    public var mergedSources = 0
    /// Stream objects written.
    public var outputs = 0
    /// Streams whose start offset retention moved.
    public var trims = 0
    /// Compacted streams cleaned, and the records cleaning removed.
    public var cleanings = 0
    public var cleanedRecords = 0
    /// Objects removed from the store.
    public var deletedObjects = 0
    /// Bytes those objects held.
    public var reclaimedBytes = 0
    /// Compactions the controller refused (their sources changed meanwhile); retried next pass.
    public var refused = 0
    /// Source bytes read and output bytes written.
    public var bytesRead = 0
    public var bytesWritten = 0

    public init() {}

    /// Whether the pass changed anything.
    public var didWork: Bool { splitSources + mergedSources + trims + deletedObjects + cleanings > 0 }
}

/// A source object read whole: its record, bytes and verified index.
struct LoadedObject {
    var record: ObjectRecord
    var bytes: ByteBuffer
    var index: ObjectIndex
}

/// One output of a compaction before it is uploaded: a stream's blocks, in offset order.
struct PlannedOutput {
    var stream: StreamID
    var epoch: LeaderEpoch
    var blocks: [StoredBlock]
    /// Blocks whose batches were rewritten (key compaction), by start offset; the others are copied.
    var cleaned: [Int64: KeyCompaction.CleanedBlock] = [:]
}

/// Rewrites and removes objects so that object storage holds few, large, reachable objects.
///
/// Each pass, with the metadata the node has applied: garbage collection (first compactor only),
/// retention trims of its streams, splitting its stream-set objects into per-stream objects, and
/// merging its streams' small stream objects. Every rewrite is prepare → PUT → one
/// `commitCompaction` (outputs in, sources destroyed); a crash before the commit leaves prepared
/// ids that expire, and their objects are deleted by the garbage collection after the grace period.
/// Nothing outside the controller's metadata is kept between passes except caches.
public actor Compactor {
    public let settings: CompactorSettings
    let nodeId: NodeID
    let metadata: any CompactorMetadata
    let store: any ObjectStore
    let now: @Sendable () -> Millis
    let logger: Logger
    /// Indexes of objects read for retention, by id (objects are immutable; pruned to live ids).
    var indexes: [ObjectID: ObjectIndex] = [:]
    /// Per compacted stream, the committed end at its last cleaning check: it is checked again once data arrives.
    var checkedEnds: [StreamID: Int64] = [:]
    /// Store keys seen unreferenced, with when they were first seen.
    var orphansSeen: [String: Millis] = [:]
    var lastOrphanScan: Millis?
    var lastRetentionCheck: Millis?
    /// Totals over all passes.
    public private(set) var totals = PassReport()
    public private(set) var passes = 0
    /// Wall-clock milliseconds of the last completed pass, 0 before the first.
    public private(set) var lastPassMillis: Millis = 0

    public init(
        nodeId: NodeID, settings: CompactorSettings, metadata: any CompactorMetadata, store: any ObjectStore,
        now: @escaping @Sendable () -> Millis, logger: Logger
    ) {
        self.nodeId = nodeId
        self.settings = settings
        self.metadata = metadata
        self.store = store
        self.now = now
        self.logger = logger
    }

    /// One pass over this node's share. Throws when the store or controller fails; a later pass resumes.
    @discardableResult
    public func runPass() async throws -> PassReport {
        var report = PassReport()
        defer {
            totals.add(report)
            passes += 1
        }
        guard let shard = CompactorShard(state: await metadata.current(), nodeId: nodeId) else { return report }
        if shard.collectsGarbage { try await collectGarbage(&report) }
        let clock = now()
        let retentionDue = settings.retentionCheckIntervalMillis == 0
            || lastRetentionCheck.map { clock - $0 >= settings.retentionCheckIntervalMillis } ?? false
        if lastRetentionCheck == nil || retentionDue { lastRetentionCheck = clock }
        if retentionDue { try await applyRetention(shard: shard, &report) }
        let splitting = CompactionPlanner.splitSources(await metadata.current(), shard: shard, maxBytes: settings.maxPassBytes)
        if !splitting.isEmpty { try await split(splitting, &report) }
        let state = await metadata.current()
        for streamId in state.streams.keys.sorted() where shard.owns(stream: streamId) {
            let runs = CompactionPlanner.mergeRuns(
                state, stream: streamId, targetBytes: settings.streamObjectBytes, minObjects: settings.mergeMinObjects)
            for run in runs { try await merge(run, stream: streamId, &report) }
        }
        try await cleanCompactedTopics(shard: shard, &report)
        lastPassMillis = now()
        return report
    }

    // MARK: Retention

    func applyRetention(shard: CompactorShard, _ report: inout PassReport) async throws {
        let state = await metadata.current()
        indexes = indexes.filter { state.objects[$0.key]?.state == .committed }
        for streamId in state.streams.keys.sorted() where shard.owns(stream: streamId) {
            guard let stream = state.streams[streamId], let topic = state.topic(id: stream.topicId) else { continue }
            let policy = RetentionPolicy(configs: topic.configs, settings: settings)
            guard policy.limitsSomething else { continue }
            for location in state.objects(covering: streamId, from: stream.startOffset) where indexes[location.objectId] == nil {
                guard let record = state.objects[location.objectId] else { continue }
                let key = ObjectKey.make(id: record.id, metadataCode: record.kind.rawValue)
                indexes[record.id] = try await ObjectReader(store: store).index(key: key, objectSize: Int(record.size))
            }
            let blocks = try CompactionPlanner.blocks(of: stream, in: state, indexes: indexes)
            guard let start = CompactionPlanner.retentionStart(blocks, policy: policy, now: now(), logStart: stream.logStartOffset) else {
                continue
            }
            let result = try await metadata.write(.trimStream(streamId: streamId, newStart: start, now: now()))
            guard case .ok = result else { throw CompactorError.controller("trimStream answered \(result)") }
            report.trims += 1
            logger.info("retention moved the log start", metadata: [
                "topic": "\(topic.name)", "partition": "\(stream.partition)", "start": "\(start)",
            ])
        }
    }

    // MARK: Split and merge

    /// Rewrites stream-set objects as stream objects, one or more per stream they hold.
    func split(_ sources: [ObjectRecord], _ report: inout PassReport) async throws {
        let loaded = try await load(sources, &report)
        let state = await metadata.current()
        let ids = Set(sources.map(\.id))
        var planned: [PlannedOutput] = []
        for streamId in Set(sources.flatMap { $0.ranges.map(\.streamId) }).sorted() {
            guard let stream = state.streams[streamId] else { continue }
            let blocks = try CompactionPlanner.blocks(of: stream, in: state, indexes: loaded.mapValues(\.index), only: ids)
            let epoch = sources.flatMap(\.ranges).filter { $0.streamId == streamId }.map(\.epoch).max() ?? stream.epoch
            for piece in CompactionPlanner.cut(blocks, targetBytes: settings.streamObjectBytes) {
                planned.append(PlannedOutput(stream: streamId, epoch: epoch, blocks: piece))
            }
        }
        if try await commit(planned, sources: sources.map(\.id), loaded: loaded, &report) {
            report.splitSources += sources.count
        }
    }

    /// Rewrites a run of one stream's small stream objects as one.
    func merge(_ run: [ObjectRecord], stream streamId: StreamID, _ report: inout PassReport) async throws {
        let loaded = try await load(run, &report)
        let state = await metadata.current()
        guard let stream = state.streams[streamId] else { return }
        let blocks = try CompactionPlanner.blocks(of: stream, in: state, indexes: loaded.mapValues(\.index), only: Set(run.map(\.id)))
        let epoch = run.flatMap(\.ranges).map(\.epoch).max() ?? stream.epoch
        let planned = blocks.isEmpty ? [] : [PlannedOutput(stream: streamId, epoch: epoch, blocks: blocks)]
        if try await commit(planned, sources: run.map(\.id), loaded: loaded, &report) {
            report.mergedSources += run.count
        }
    }

    /// Source GETs and output PUTs in flight at once: object stores answer each request slowly and many in parallel well.
    static let storeConcurrency = 8

    /// Reads whole source objects, `storeConcurrency` at a time, and checks their indexes.
    func load(_ sources: [ObjectRecord], _ report: inout PassReport) async throws -> [ObjectID: LoadedObject] {
        let store = store
        let loaded = try await Self.concurrently(sources) { record -> LoadedObject in
            let key = ObjectKey.make(id: record.id, metadataCode: record.kind.rawValue)
            let bytes = try await store.get(key)
            guard bytes.readableBytes == Int(record.size) else {
                throw CompactorError.inconsistent("object \(record.id) is \(bytes.readableBytes) bytes, metadata says \(record.size)")
            }
            return LoadedObject(record: record, bytes: bytes, index: try ObjectIndex.decode(object: bytes))
        }
        report.bytesRead += loaded.reduce(0) { $0 + $1.bytes.readableBytes }
        return Dictionary(uniqueKeysWithValues: loaded.map { ($0.record.id, $0) })
    }

    /// `body` over `items` with at most `storeConcurrency` running; results in the order of `items`.
    static func concurrently<Item: Sendable, Result: Sendable>(
        _ items: [Item], _ body: @escaping @Sendable (Item) async throws -> Result
    ) async throws -> [Result] {
        try await withThrowingTaskGroup(of: (Int, Result).self) { group in
            var results: [Result?] = Array(repeating: nil, count: items.count)
            var next = 0
            while next < min(items.count, storeConcurrency) {
                let index = next
                group.addTask { (index, try await body(items[index])) }
                next += 1
            }
            while let (index, result) = try await group.next() {
                results[index] = result
                if next < items.count {
                    let index = next
                    group.addTask { (index, try await body(items[index])) }
                    next += 1
                }
            }
            return results.compactMap { $0 }
        }
    }

    /// Uploads the outputs and swaps them for the sources in one controller commit. False when the
    /// controller refused the swap (the sources changed meanwhile); the outputs are then released.
    func commit(
        _ planned: [PlannedOutput], sources: [ObjectID], loaded: [ObjectID: LoadedObject], _ report: inout PassReport
    ) async throws -> Bool {
        var prepared: [ObjectID] = []
        var commits: [ObjectCommit] = []
        do {
            var uploads: [(key: String, bytes: ByteBuffer)] = []
            for output in planned {
                let result = try await metadata.write(.prepareObject(kind: .stream, deadline: now() + settings.prepareLifetimeMillis))
                guard case .objectPrepared(let id) = result else { throw CompactorError.controller("prepareObject answered \(result)") }
                prepared.append(id)
                let bytes = try Self.build(output, loaded: loaded)
                uploads.append((ObjectKey.make(id: id, metadataCode: ObjectKind.stream.rawValue), bytes))
                commits.append(ObjectCommit(
                    objectId: id, size: Int64(bytes.readableBytes),
                    ranges: CompactionPlanner.ranges(of: output.blocks, stream: output.stream, epoch: output.epoch)))
            }
            let store = store
            _ = try await Self.concurrently(uploads) { upload in try await store.put(upload.key, upload.bytes) }
            report.bytesWritten += uploads.reduce(0) { $0 + $1.bytes.readableBytes }
            let result = try await metadata.write(.commitCompaction(outputs: commits, sources: sources, now: now()))
            guard case .ok = result else {
                report.refused += 1
                logger.info("compaction refused; its sources changed", metadata: ["sources": "\(sources)", "answer": "\(result)"])
                await release(prepared)
                return false
            }
        } catch {
            await release(prepared)
            throw error
        }
        report.outputs += commits.count
        return true
    }

    /// Gives prepared ids back early; if that fails too they expire at their deadline.
    func release(_ ids: [ObjectID]) async {
        guard !ids.isEmpty else { return }
        _ = try? await metadata.write(.releaseObjects(ids, now: now()))
    }

    /// The bytes of one output object: its blocks copied from the loaded sources, checksums verified.
    static func build(_ output: PlannedOutput, loaded: [ObjectID: LoadedObject]) throws -> ByteBuffer {
        var writer = ObjectWriter(expectedBytes: output.blocks.reduce(0) { $0 + $1.bytes })
        for block in output.blocks {
            if let cleaned = output.cleaned[block.startOffset] {
                try writer.append(
                    streamID: block.entry.streamID, firstOffset: block.startOffset, endOffset: block.endOffset,
                    recordCount: cleaned.recordCount, maxTimestamp: block.entry.maxTimestamp, batches: cleaned.batches)
                continue
            }
            guard let source = loaded[block.objectId],
                  let bytes = source.bytes.getSlice(at: source.bytes.readerIndex + Int(block.entry.position), length: block.bytes)
            else { throw CompactorError.inconsistent("block at \(block.entry.position) of object \(block.objectId) was not loaded") }
            try ObjectIndex.verify(block: bytes, entry: block.entry)
            try writer.append(
                streamID: block.entry.streamID, firstOffset: block.startOffset, endOffset: block.endOffset,
                recordCount: block.entry.recordCount, maxTimestamp: block.entry.maxTimestamp, batches: bytes)
        }
        return try writer.finish()
    }
}

extension PassReport {
    mutating func add(_ other: PassReport) {
        splitSources += other.splitSources
        mergedSources += other.mergedSources
        outputs += other.outputs
        trims += other.trims
        cleanings += other.cleanings
        cleanedRecords += other.cleanedRecords
        deletedObjects += other.deletedObjects
        reclaimedBytes += other.reclaimedBytes
        refused += other.refused
        bytesRead += other.bytesRead
        bytesWritten += other.bytesWritten
    }
}
