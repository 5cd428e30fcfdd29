@testable import Raft
import TestKit

/// A broken invariant (or lost liveness) found by the simulator.
struct SimFailure: Error, CustomStringConvertible {
    var description: String
}

/// Knobs of one simulated run, derived from its seed.
struct SimParameters {
    var nodeCount: Int
    var chaosNanos: UInt64 = 2_000_000_000
    var livenessBudgetNanos: UInt64 = 20_000_000_000
    var dropPermille: UInt64 = 50
    var duplicatePermille: UInt64 = 20
    var maxDelayNanos: UInt64 = 15_000_000
    var faultIntervalNanos: UInt64 = 250_000_000
    var crashPermille: UInt64 = 300
    var proposalIntervalNanos: UInt64 = 15_000_000
    var maxFsyncNanos: UInt64 = 4_000_000
    var maxEvents = 400_000
    var entriesPerMessage = 6
    var leaderCrashAfterCommitPermille: UInt64 = 0

    static let tickNanos: UInt64 = 10_000_000

    static func forSeed(_ seed: UInt64) -> SimParameters {
        var random = SeededRandom(seed: seed ^ 0x5EED)
        let nodeCount = seed % 8 == 0 ? 1 : (seed % 2 == 1 ? 3 : 5)
        var p = SimParameters(nodeCount: nodeCount)
        p.dropPermille = random.between(0, 150)
        p.duplicatePermille = random.between(0, 50)
        p.maxDelayNanos = random.between(2, 30) * 1_000_000
        p.faultIntervalNanos = random.between(100, 500) * 1_000_000
        p.crashPermille = random.between(100, 500)
        p.maxFsyncNanos = random.between(1, 8) * 1_000_000
        p.entriesPerMessage = [1, 2, 6][Int(random.below(3))]
        p.chaosNanos = random.between(10, 30) * 100_000_000
        p.leaderCrashAfterCommitPermille = random.chance(500) ? random.between(5, 40) : 0
        // Some disks are slow enough that durability, not the network, paces replication and elections.
        if random.chance(100) { p.maxFsyncNanos = random.between(20, 80) * 1_000_000 }
        return p
    }

    func configuration(id: RaftNodeID) -> RaftConfiguration {
        RaftConfiguration(
            id: id, voters: (1...UInt64(nodeCount)).map { $0 },
            electionTimeoutMin: .milliseconds(150), electionTimeoutMax: .milliseconds(300),
            heartbeatInterval: .milliseconds(40),
            maxEntriesPerMessage: entriesPerMessage, maxBytesPerMessage: 4096, maxInflightMessages: 3, maxInflightBytes: 16384,
            snapshotThreshold: 24, entriesKeptAfterSnapshot: 4, snapshotChunkBytes: 96, maxSnapshotBytes: 1 << 20)
    }
}

/// The application state machine of the simulation: the applied entries themselves, snapshotted as bytes.
enum SimStateMachine {
    static func encode(_ entries: ArraySlice<RaftLogEntry>) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(entries.count * 18)
        for entry in entries {
            withUnsafeBytes(of: entry.term.bigEndian) { bytes.append(contentsOf: $0) }
            bytes.append(entry.kind.rawValue)
            bytes.append(UInt8(entry.payload.count))
            bytes.append(contentsOf: entry.payload)
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) throws(SimFailure) -> [RaftLogEntry] {
        var entries: [RaftLogEntry] = []
        var at = 0
        while at < bytes.count {
            guard at + 10 <= bytes.count else { throw SimFailure(description: "truncated snapshot") }
            var term: UInt64 = 0
            for k in 0..<8 { term = term << 8 | UInt64(bytes[at + k]) }
            guard let kind = RaftLogEntry.Kind(rawValue: bytes[at + 8]) else { throw SimFailure(description: "bad snapshot kind") }
            let length = Int(bytes[at + 9])
            at += 10
            guard at + length <= bytes.count else { throw SimFailure(description: "truncated snapshot payload") }
            entries.append(RaftLogEntry(term: term, index: UInt64(entries.count + 1), kind: kind, payload: Array(bytes[at..<at + length])))
            at += length
        }
        return entries
    }
}

/// One node's disk: writes become durable only at fsync; a crash loses the rest.
struct SimDisk {
    enum Operation {
        case hardState(RaftHardState)
        case append([RaftLogEntry])
        case install(RaftSnapshot)
        case compact(RaftIndex)
    }

    var hardState = RaftHardState()
    var snapshot: RaftSnapshot?
    var log: [RaftLogEntry] = []
    var pending: [(sequence: RaftStorageSequence, operation: Operation)] = []
    var fsyncScheduled = false

    mutating func flush() -> RaftStorageSequence {
        var through: RaftStorageSequence = 0
        for (sequence, operation) in pending {
            through = max(through, sequence)
            switch operation {
            case let .hardState(state):
                hardState = state
            case let .append(entries):
                guard let first = entries.first else { continue }
                log.removeAll { $0.index >= first.index }
                log.append(contentsOf: entries)
            case let .install(snap):
                installSnapshot(snap)
            case let .compact(index):
                log.removeAll { $0.index <= index }
            }
        }
        pending = []
        return through
    }

    mutating func installSnapshot(_ snap: RaftSnapshot) {
        if let current = snapshot, current.metadata.index >= snap.metadata.index { return }
        let keep = log.contains { $0.index == snap.metadata.index && $0.term == snap.metadata.term }
        snapshot = snap
        if keep { log.removeAll { $0.index <= snap.metadata.index } } else { log = [] }
    }

    /// The durable entry at `index` (from the log, or whether a snapshot covers it).
    func has(index: RaftIndex, term: RaftTerm) -> Bool {
        if let snapshot, index <= snapshot.metadata.index {
            return index < snapshot.metadata.index || snapshot.metadata.term == term
        }
        guard let first = log.first, index >= first.index else { return false }
        let k = Int(index - first.index)
        return k < log.count && log[k].index == index && log[k].term == term
    }
}
