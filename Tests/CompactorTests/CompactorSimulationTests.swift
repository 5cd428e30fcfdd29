import ClusterMetadata
import CompactorCore
import ObjectStorage
import Testing
import TestKit

/// The commit protocol under crashes: a compactor is killed at every step of a pass (before each
/// controller write or store call takes effect, and after it with the answer lost), a fresh one
/// takes over, and after every crash the data reads back unchanged; once garbage collection has run,
/// the store holds exactly what the metadata references.
@Suite struct CompactorSimulationTests {
    /// Small targets, so a little data exercises splits, cuts and merges.
    static let settings = CompactorSettings(
        streamObjectBytes: 6000, mergeMinObjects: 3, maxPassBytes: 20_000, deleteGraceMillis: 1000, prepareLifetimeMillis: 5000,
        orphanScanIntervalMillis: 1000, retentionCheckIntervalMillis: 0)

    /// A seeded world with a few uploads, some of them after a first compaction so that stream
    /// objects and new stream-set objects mix.
    static func world(seed: UInt64) async throws -> CompactionWorld {
        var random = SeededRandom(seed: seed)
        let world = CompactionWorld(topics: 2, partitions: 3, configs: seed % 3 == 0 ? ["retention.bytes": "4000"] : [:])
        for _ in 0..<random.between(3, 6) {
            let chosen = world.streamIds.filter { _ in random.chance(600) }
            try await world.upload(&random, streams: chosen.isEmpty ? [world.streamIds[0]] : chosen)
        }
        return world
    }

    /// Passes until one changes nothing; time moves past every deadline and grace period before
    /// every other pass, and by a millisecond before the rest (when a deletion would be too early).
    static func settle(_ world: CompactionWorld) async throws {
        let compactor = world.compactor(settings: settings)
        // Readers that listed objects before each recent pass.
        var readers: [(MetadataState, Millis)] = []
        for pass in 0..<40 {
            world.advance(by: pass % 2 == 0 ? settings.prepareLifetimeMillis + settings.deleteGraceMillis + 1 : 1)
            readers = readers.suffix(3) + [(world.controller.metadata, world.now)]
            let report = try await compactor.runPass()
            try await world.checkReadable()
            for (stale, since) in readers { try await world.checkStaleReader(stale, since: since, grace: settings.deleteGraceMillis) }
            if !report.didWork, world.controller.metadata.objects(in: .destroyed).isEmpty,
               world.controller.metadata.objects(in: .prepared).isEmpty
            {
                // One more scan: orphans are deleted once seen for the grace period.
                world.advance(by: settings.prepareLifetimeMillis + settings.deleteGraceMillis + 1)
                try await compactor.runPass()
                return
            }
        }
        throw ClusterTestError("compaction did not settle in 40 passes")
    }

    @Test(arguments: Array(UInt64(1)...UInt64(8)))
    func crashAtEveryStep(seed: UInt64) async throws {
        // A clean pass counts the steps a crash can hit.
        let reference = try await Self.world(seed: seed)
        let counting = FaultPlan()
        try await reference.compactor(counting, settings: Self.settings).runPass()
        let steps = counting.steps
        #expect(steps > 5)
        for crashAt in 0..<steps {
            for timing in FaultTiming.allCases {
                let world = try await Self.world(seed: seed)
                let faults = FaultPlan(crashAt: crashAt, timing: timing)
                let (stale, since) = (world.controller.metadata, world.now)
                await #expect(throws: SimulatedCrash.self) { try await world.compactor(faults, settings: Self.settings).runPass() }
                try await world.checkReadable()
                try await world.checkStaleReader(stale, since: since, grace: Self.settings.deleteGraceMillis)
                try await Self.settle(world)
                try await world.checkReadable()
                try await world.checkNoGarbage()
                #expect(world.objectCounts()[.streamSet, default: 0] == 0, "seed \(seed) crash \(crashAt) \(timing)")
            }
        }
    }

    /// Two compactors that both believe they own the same streams (a membership change not yet
    /// seen by one of them): one runs a whole pass in the middle of the other's. The controller
    /// takes only one of each swap; nothing is lost or duplicated and the loser's outputs are collected.
    @Test(arguments: Array(UInt64(1)...UInt64(6)))
    func overlappingCompactors(seed: UInt64) async throws {
        let reference = try await Self.world(seed: seed)
        let counting = FaultPlan()
        try await reference.compactor(counting, settings: Self.settings).runPass()
        for pauseAt in stride(from: 0, to: counting.steps, by: 2) {
            let world = try await Self.world(seed: seed)
            let interleaved = FaultPlan(interleaveAt: pauseAt) { try await world.compactor(settings: Self.settings).runPass() }
            let first = world.compactor(interleaved, settings: Self.settings)
            try await first.runPass()
            try await world.checkReadable()
            try await Self.settle(world)
            try await world.checkReadable()
            try await world.checkNoGarbage()
        }
    }

    @Test func settledStoreHasFewObjectsPerStream() async throws {
        var random = SeededRandom(seed: 99)
        let world = CompactionWorld(topics: 1, partitions: 4)
        for _ in 0..<30 { try await world.upload(&random, streams: world.streamIds) }
        let before = world.objectCounts()[.streamSet, default: 0]
        try await Self.settle(world)
        let state = world.controller.metadata
        #expect(before == 30)
        #expect(world.objectCounts()[.streamSet, default: 0] == 0)
        for stream in world.streamIds {
            let objects = Set(state.objects(covering: stream, from: 0).map(\.objectId))
            let bytes = objects.reduce(Int64(0)) { $0 + (state.objects[$1]?.size ?? 0) }
            // Full objects of about the target size, plus fewer than `mergeMinObjects` small ones.
            let bound = Int(bytes / Int64(Self.settings.streamObjectBytes)) + Self.settings.mergeMinObjects
            #expect(objects.count <= bound, "stream \(stream): \(objects.count) objects for \(bytes) bytes")
        }
        try await world.checkNoGarbage()
    }
}
