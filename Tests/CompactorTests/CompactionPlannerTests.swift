import ClusterMetadata
import CompactorCore
import NIOCore
import ObjectStorage
import Testing
import TestKit

@Suite struct CompactionPlannerTests {
    static func block(_ first: Int64, _ end: Int64, bytes: UInt32, stamp: Int64, committedAt: Millis = 0) -> StoredBlock {
        StoredBlock(
            objectId: first, kind: .stream, committedAt: committedAt,
            entry: BlockIndexEntry(
                streamID: 1, firstOffset: first, endOffset: end, recordCount: Int32(end - first), maxTimestamp: stamp,
                position: 0, length: bytes, crc: 0))
    }

    static let blocks = [
        block(0, 10, bytes: 100, stamp: 1000), block(10, 20, bytes: 100, stamp: 2000), block(20, 30, bytes: 100, stamp: 3000),
    ]

    @Test func retentionByTimeDropsWholeExpiredBlocksOldestFirst() {
        let policy = RetentionPolicy(deletes: true, retentionMillis: 1500, retentionBytes: -1)
        #expect(CompactionPlanner.retentionStart(Self.blocks, policy: policy, now: 3600, logStart: 0) == 20)
        #expect(CompactionPlanner.retentionStart(Self.blocks, policy: policy, now: 2400, logStart: 0) == nil)
        // Never backwards.
        #expect(CompactionPlanner.retentionStart(Self.blocks, policy: policy, now: 3600, logStart: 25) == nil)
        // Everything expired: the start moves to the end of the last block.
        #expect(CompactionPlanner.retentionStart(Self.blocks, policy: policy, now: 10_000, logStart: 0) == 30)
    }

    @Test func retentionByBytesKeepsAtLeastTheLimit() {
        let policy = RetentionPolicy(deletes: true, retentionMillis: -1, retentionBytes: 150)
        #expect(CompactionPlanner.retentionStart(Self.blocks, policy: policy, now: 0, logStart: 0) == 10)
        let exact = RetentionPolicy(deletes: true, retentionMillis: -1, retentionBytes: 100)
        #expect(CompactionPlanner.retentionStart(Self.blocks, policy: exact, now: 0, logStart: 0) == 20)
    }

    @Test func blocksWithoutTimestampsAgeFromTheirCommit() {
        let policy = RetentionPolicy(deletes: true, retentionMillis: 100, retentionBytes: -1)
        let untimed = [Self.block(0, 5, bytes: 10, stamp: -1, committedAt: 500), Self.block(5, 9, bytes: 10, stamp: -1, committedAt: 900)]
        #expect(CompactionPlanner.retentionStart(untimed, policy: policy, now: 700, logStart: 0) == 5)
    }

    @Test func compactOnlyTopicsAreNeverTrimmed() {
        let settings = CompactorSettings(defaultRetentionMillis: 1, defaultRetentionBytes: 1)
        let compact = RetentionPolicy(configs: ["cleanup.policy": "compact"], settings: settings)
        #expect(!compact.limitsSomething)
        #expect(CompactionPlanner.retentionStart(Self.blocks, policy: compact, now: 1 << 40, logStart: 0) == nil)
        let both = RetentionPolicy(configs: ["cleanup.policy": "compact,delete", "retention.ms": "-1"], settings: settings)
        #expect(both.deletes && both.retentionMillis == -1 && both.retentionBytes == 1)
        let defaults = RetentionPolicy(configs: [:], settings: CompactorSettings())
        #expect(defaults.deletes && defaults.retentionMillis == 604_800_000 && defaults.retentionBytes == -1)
    }

    @Test func cutsAtTheTargetAndJoinsAdjacentRanges() {
        let pieces = CompactionPlanner.cut(Self.blocks, targetBytes: 200)
        #expect(pieces.map { $0.map(\.startOffset) } == [[0, 10], [20]])
        let gap = [Self.block(0, 10, bytes: 1, stamp: 0), Self.block(10, 20, bytes: 1, stamp: 0), Self.block(30, 40, bytes: 1, stamp: 0)]
        let ranges = CompactionPlanner.ranges(of: gap, stream: 1, epoch: 3)
        #expect(ranges.map { [$0.startOffset, $0.endOffset] } == [[0, 20], [30, 40]])
    }

    @Test func shardsSplitStreamsAndObjectsByActiveCompactors() {
        var state = MetadataState()
        for (index, id) in [NodeID(403), 401, 402].enumerated() {
            _ = state.apply(.registerNode(NodeRegistration(id: id, kind: .compactor, zone: "a", listener: "x:1", admin: "x:2")), index: UInt64(index + 1))
        }
        _ = state.apply(.registerNode(NodeRegistration(id: 101, kind: .broker, zone: "a", listener: "x:1", admin: "x:2")), index: 4)
        let shards = [NodeID(401), 402, 403].compactMap { CompactorShard(state: state, nodeId: $0) }
        #expect(shards.map(\.rank) == [0, 1, 2])
        #expect(shards.filter(\.collectsGarbage).count == 1)
        #expect(CompactorShard(state: state, nodeId: 101) == nil)
        for stream in StreamID(1)...StreamID(30) { #expect(shards.filter { $0.owns(stream: stream) }.count == 1) }
        // A fenced compactor's share moves to the others.
        let incarnation = state.nodes[402]!.incarnation
        _ = state.apply(.fenceNode(id: 402, incarnation: incarnation), index: 5)
        #expect(CompactorShard(state: state, nodeId: 402) == nil)
        #expect(CompactorShard(state: state, nodeId: 403) == CompactorShard(rank: 1, count: 2))
    }
}

@Suite struct GarbageCollectionTests {
    /// A PUT that lands after its id was forgotten, and a key that is not Floe's: the first goes
    /// once it has been seen unreferenced for the grace period, the second stays.
    @Test func orphansGoAfterTheGracePeriodForeignKeysStay() async throws {
        var random = SeededRandom(seed: 5)
        let world = CompactionWorld(topics: 1, partitions: 2)
        try await world.upload(&random, streams: world.streamIds)
        let settings = CompactorSettings(deleteGraceMillis: 1000, orphanScanIntervalMillis: 1000)
        guard case .objectPrepared(let id) = world.controller.apply(.prepareObject(kind: .streamSet, deadline: world.now + 10)) else {
            throw ClusterTestError("prepare failed")
        }
        let compactor = world.compactor(settings: settings)
        world.advance(by: 20)
        try await compactor.runPass()
        world.advance(by: 1001)
        try await compactor.runPass()
        #expect(world.controller.metadata.objects[id] == nil, "the expired id is forgotten")
        let late = ObjectKey.make(id: id, metadataCode: ObjectKind.streamSet.rawValue)
        var bytes = ByteBuffer()
        bytes.writeString("late upload")
        try await world.store.put(late, bytes)
        try await world.store.put("backups/not-floe", bytes)
        let unallocated = ObjectKey.make(id: id + 100, metadataCode: ObjectKind.stream.rawValue)
        try await world.store.put(unallocated, bytes)
        world.advance(by: 1001)
        try await compactor.runPass()
        #expect(try await world.store.head(late) != nil, "first seen now: kept for the grace period")
        world.advance(by: 1001)
        let report = try await compactor.runPass()
        #expect(try await world.store.head(late) == nil)
        #expect(report.deletedObjects >= 1)
        #expect(try await world.store.head("backups/not-floe") != nil)
        #expect(try await world.store.head(unallocated) != nil, "an id the metadata has not handed out may be newer than this view")
        try await world.checkReadable()
    }

    /// retention.bytes moves the log start, and the objects wholly below it leave the store after the grace period.
    @Test func retentionWaitsForItsCheckInterval() async throws {
        var random = SeededRandom(seed: 8)
        let world = CompactionWorld(topics: 1, partitions: 1, configs: ["retention.ms": "5000"])
        for _ in 0..<12 { try await world.upload(&random, streams: world.streamIds) }
        let compactor = world.compactor(settings: CompactorSettings(retentionCheckIntervalMillis: 10_000))
        #expect(try await compactor.runPass().trims == 0, "the first check comes one interval after start")
        world.advance(by: 9_999)
        #expect(try await compactor.runPass().trims == 0)
        world.advance(by: 1)
        #expect(try await compactor.runPass().trims == 1)
    }

    @Test func retentionFreesObjects() async throws {
        var random = SeededRandom(seed: 8)
        let world = CompactionWorld(topics: 1, partitions: 1, configs: ["retention.bytes": "3000"])
        for _ in 0..<12 { try await world.upload(&random, streams: world.streamIds) }
        let settings = CompactorSettings(
            streamObjectBytes: 1 << 20, maxPassBytes: 1 << 20, deleteGraceMillis: 1000, orphanScanIntervalMillis: 1000,
            retentionCheckIntervalMillis: 0)
        let compactor = world.compactor(settings: settings)
        let first = try await compactor.runPass()
        #expect(first.trims == 1)
        let stream = world.controller.metadata.streams[world.streamIds[0]]!
        #expect(stream.logStartOffset > 0)
        world.advance(by: 1001)
        let second = try await compactor.runPass()
        #expect(second.deletedObjects > 0)
        try await world.checkReadable()
        try await world.checkNoGarbage()
    }
}
