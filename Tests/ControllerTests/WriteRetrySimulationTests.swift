#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing

private func environmentValue(_ name: String) -> UInt64? {
    guard let raw = getenv(name) else { return nil }
    return UInt64(String(cString: raw))
}

/// Controller writes retried through leader changes, crashes, partitions and snapshots are applied exactly once,
/// and every answer is the first application's (`WriteRetrySimulation`).
@Suite struct WriteRetrySimulationTests {
    static func run(seed: UInt64, idempotent: Bool) -> Result<WriteRetrySimulation.Stats, SimFailure> {
        var simulation: WriteRetrySimulation?
        do {
            let sim = try WriteRetrySimulation(seed: seed, parameters: .forSeed(seed, idempotent: idempotent))
            simulation = sim
            try sim.run()
            try sim.checkOutcome()
            return .success(sim.stats)
        } catch {
            return .failure(SimFailure(description: "\(error)\nreplay with: \(simulation?.replay ?? "")\nlast events:\n\(simulation?.traceTail ?? "")"))
        }
    }

    @Test func retriedWritesApplyOnceThroughLeaderChangesAndSnapshots() {
        let seeds: ClosedRange<UInt64> = if let single = environmentValue("FLOE_WRITE_RETRY_SEED") {
            single...single
        } else {
            1...max(1, environmentValue("FLOE_WRITE_RETRY_SEEDS") ?? 1000)
        }
        var total = WriteRetrySimulation.Stats()
        var runs = 0, seedsWithDuplicates = 0, failures = 0
        for seed in seeds {
            switch Self.run(seed: seed, idempotent: true) {
            case let .success(stats):
                runs += 1
                if stats.duplicateEntriesCommitted > 0 { seedsWithDuplicates += 1 }
                total.attempts += stats.attempts
                total.retries += stats.retries
                total.answeredFromMemory += stats.answeredFromMemory
                total.duplicateEntriesCommitted += stats.duplicateEntriesCommitted
                total.deduplicatedAfterLoad += stats.deduplicatedAfterLoad
                total.lateAnswers += stats.lateAnswers
                total.leaderChanges += stats.leaderChanges
                total.crashes += stats.crashes
                total.snapshotsInstalled += stats.snapshotsInstalled
                total.restartsFromSnapshot += stats.restartsFromSnapshot
                total.timeouts += stats.timeouts
            case let .failure(failure):
                Issue.record("controller write retry simulation failed: \(failure)")
                failures += 1
                if failures >= 3 { return }
            }
        }
        print("write retry simulation: \(runs) seeds passed, \(seedsWithDuplicates) with a write committed twice; \(total)")
        guard seeds.count >= 1000 else { return }
        // The runs reach the cases that matter: retries whose first attempt committed too, answered from the
        // remembered table at the leader or deduplicated when the second entry applied, also on nodes that
        // learnt the first application only from a snapshot.
        #expect(total.retries > 20 * runs)
        #expect(total.duplicateEntriesCommitted > runs)
        #expect(seedsWithDuplicates > runs / 4)
        #expect(total.answeredFromMemory > runs)
        #expect(total.deduplicatedAfterLoad > runs / 10)
        #expect(total.lateAnswers > runs)
        #expect(total.leaderChanges > 2 * runs)
        #expect(total.snapshotsInstalled > runs / 10)
        #expect(total.restartsFromSnapshot > runs / 2)
    }

    /// The same runs with clients that send no write id: the checks must catch the double applications,
    /// or they could not catch them either when the deduplication breaks.
    @Test func withoutWriteIdsTheChecksFindDoubleApplications() {
        var caught = 0
        var kinds: Set<String> = []
        for seed in UInt64(1)...100 {
            if case let .failure(failure) = Self.run(seed: seed, idempotent: false) {
                caught += 1
                if failure.description.contains("differs from each write applied once") { kinds.insert("state") }
                if failure.description.contains("was answered") { kinds.insert("answer") }
            }
        }
        #expect(caught >= 50, "only \(caught) of 100 runs without write ids were caught")
        #expect(kinds == ["state", "answer"])
    }
}
