#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import Raft

private func environmentValue(_ name: String) -> String? {
    guard let raw = getenv(name) else { return nil }
    return String(cString: raw)
}

@Suite struct RaftSimulationTests {
    /// Runs one seeded simulation and turns a failure into a readable test issue with the replay command.
    struct Totals {
        var runs = 0, elections = 0, proposals = 0, applied = 0, crashes = 0, snapshotsInstalled = 0
    }

    @discardableResult
    static func runSeed(_ seed: UInt64, totals: inout Totals) -> Bool {
        let parameters = SimParameters.forSeed(seed)
        var simulation: RaftSimulation?
        do {
            let sim = try RaftSimulation(seed: seed, parameters: parameters)
            simulation = sim
            try sim.run()
            totals.runs += 1
            totals.elections += sim.stats.elections
            totals.proposals += sim.stats.proposalsAccepted
            totals.applied += sim.stats.applied
            totals.crashes += sim.stats.crashes
            totals.snapshotsInstalled += sim.stats.snapshotsInstalled
            return true
        } catch {
            let tail = simulation?.traceTail ?? ""
            let replay = simulation?.commandLine ?? "FLOE_RAFT_SEED=\(seed) swift test --filter RaftTests"
            Issue.record("""
                Raft simulation failed: \(error)
                seed \(seed), \(parameters.nodeCount) nodes; replay with: \(replay)
                last events:
                \(tail)
                """)
            return false
        }
    }

    /// Seeds that exposed a bug (in the core, the checker, or a deliberately broken commit rule);
    /// they run on every CI pass. 2853: a vote request released after a later term was persisted.
    /// 1313: commits a previous-term entry by counting if the §5.4.2 term check is removed.
    static let regressionSeeds: [UInt64] = [2853, 1313]

    @Test(arguments: regressionSeeds) func regressionSeed(_ seed: UInt64) {
        var totals = Totals()
        Self.runSeed(seed, totals: &totals)
    }

    @Test func seededRuns() {
        var totals = Totals()
        defer {
            print("raft simulation: \(totals.runs) runs passed; \(totals.elections) elections, \(totals.proposals) proposals accepted, \(totals.applied) entries applied, \(totals.crashes) crashes, \(totals.snapshotsInstalled) snapshot installs")
        }
        if let single = environmentValue("FLOE_RAFT_SEED").flatMap(UInt64.init) {
            Self.runSeed(single, totals: &totals)
            return
        }
        let count = environmentValue("FLOE_RAFT_SEEDS").flatMap(UInt64.init) ?? 1000
        var failures = 0
        let first = environmentValue("FLOE_RAFT_FIRST_SEED").flatMap(UInt64.init) ?? 1
        for seed in first..<first + max(count, 1) {
            if !Self.runSeed(seed, totals: &totals) {
                failures += 1
                if failures >= 3 { break }
            }
        }
    }
}
