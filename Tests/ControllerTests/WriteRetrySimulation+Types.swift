@testable import ClusterMetadata
@testable import Raft
import TestKit

/// The knobs, messages and per-node and per-client state of `WriteRetrySimulation`.
extension WriteRetrySimulation {
    struct Parameters {
        var nodeCount: Int
        var clients = 3
        var writesPerClient = 30
        var chaosNanos: UInt64 = 2_000_000_000
        var livenessBudgetNanos: UInt64 = 30_000_000_000
        var dropPermille: UInt64 = 50
        var duplicatePermille: UInt64 = 20
        var maxDelayNanos: UInt64 = 10_000_000
        var faultIntervalNanos: UInt64 = 200_000_000
        var crashPermille: UInt64 = 300
        var clientTimeoutNanos: UInt64 = 100_000_000
        var proposalTimeoutNanos: UInt64 = 200_000_000
        /// Whether clients send write ids; without them the checks must find double applications.
        var idempotent = true
        var maxEvents = 600_000

        static let tickNanos: UInt64 = 10_000_000

        static func forSeed(_ seed: UInt64, idempotent: Bool = true) -> Parameters {
            var random = SeededRandom(seed: seed ^ 0x1D_E4F0)
            var p = Parameters(nodeCount: seed % 2 == 0 ? 3 : 5)
            p.idempotent = idempotent
            p.dropPermille = random.between(0, 120)
            p.duplicatePermille = random.between(0, 40)
            p.maxDelayNanos = random.between(2, 20) * 1_000_000
            p.faultIntervalNanos = random.between(80, 400) * 1_000_000
            p.crashPermille = random.between(150, 500)
            // Clients that give up before the controller does resend writes that are still in flight.
            p.clientTimeoutNanos = random.between(20, 300) * 1_000_000
            p.proposalTimeoutNanos = random.between(30, 400) * 1_000_000
            p.chaosNanos = random.between(10, 25) * 100_000_000
            return p
        }

        func configuration(id: RaftNodeID) -> RaftConfiguration {
            RaftConfiguration(
                id: id, voters: (1...UInt64(nodeCount)).map { $0 },
                electionTimeoutMin: .milliseconds(150), electionTimeoutMax: .milliseconds(300), heartbeatInterval: .milliseconds(40),
                maxEntriesPerMessage: 4, maxBytesPerMessage: 8192, maxInflightMessages: 3, maxInflightBytes: 32768,
                snapshotThreshold: 20, entriesKeptAfterSnapshot: 2, snapshotChunkBytes: 512, maxSnapshotBytes: 1 << 22)
        }
    }

    /// A client's attempt at one logical write.
    struct Request {
        var client: Int
        var write: Int
        var attempt: Int
        var writeId: WriteID?
        var command: MetadataCommand
    }

    enum Answer: Equatable {
        case applied(MetadataResult, index: UInt64)
        case notLeader(hint: Int?)
        case timedOut
    }

    enum Event {
        case deliver(RaftEnvelope)
        case tick(node: Int, incarnation: Int)
        case request(node: Int, Request)
        case answer(Request, Answer)
        case send(client: Int)
        case clientTimeout(client: Int, write: Int, attempt: Int)
        case proposalTimeout(node: Int, incarnation: Int, proposal: UInt64)
        case fault
        case restart(node: Int)
    }

    struct Disk {
        var hardState = RaftHardState()
        var snapshot: RaftSnapshot?
        var log: [RaftLogEntry] = []
    }

    struct Proposal {
        var request: Request
        var index: RaftIndex?
        var term: RaftTerm?
    }

    struct Node {
        var raft: RaftNode?
        var disk = Disk()
        var incarnation = 0
        var metadata = MetadataState()
        /// The index of the snapshot the metadata was last loaded from (0: built from the log alone).
        var loadedFrom: UInt64 = 0
        var proposals: [UInt64: Proposal] = [:]
        var proposalByIndex: [RaftIndex: UInt64] = [:]
        var nextProposal: UInt64 = 1
    }

    struct Client {
        var write = 0
        var attempt = 0
        var target = 0
    }

    struct Stats {
        var attempts = 0, retries = 0, answeredFromMemory = 0, duplicateEntriesCommitted = 0, deduplicatedAfterLoad = 0
        var lateAnswers = 0, leaderChanges = 0, crashes = 0, snapshotsInstalled = 0, restartsFromSnapshot = 0, timeouts = 0
    }
}
