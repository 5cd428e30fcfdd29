/// Identifies one voter of the Raft group (the controller's node id).
public typealias RaftNodeID = UInt64
/// A Raft term (election epoch); only ever increases.
public typealias RaftTerm = UInt64
/// A position in the replicated log; the first entry has index 1, 0 means "none".
public typealias RaftIndex = UInt64

/// An opaque monotonic instant supplied by the driver, in nanoseconds since an arbitrary origin.
public struct RaftInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the driver's origin.
    public var nanoseconds: UInt64

    /// Creates an instant `nanoseconds` after the driver's origin.
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The origin itself.
    public static let zero = RaftInstant(nanoseconds: 0)

    public static func < (lhs: RaftInstant, rhs: RaftInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// This instant moved `nanos` later, saturating instead of overflowing.
    public func advanced(byNanoseconds nanos: UInt64) -> RaftInstant {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(nanos)
        return RaftInstant(nanoseconds: overflow ? .max : sum)
    }

    public var description: String { "\(nanoseconds)ns" }
}

/// One replicated log entry.
public struct RaftLogEntry: Hashable, Sendable {
    /// Whether the entry carries a client payload or is the no-op a new leader appends to commit its term.
    public enum Kind: UInt8, Hashable, Sendable {
        /// A leader's term-opening entry; the application applies it as nothing.
        case noop = 0
        /// A client proposal.
        case command = 1
    }

    /// The term of the leader that created the entry.
    public var term: RaftTerm
    /// The entry's position in the log.
    public var index: RaftIndex
    /// No-op or command.
    public var kind: Kind
    /// Opaque application bytes (empty for a no-op).
    public var payload: [UInt8]

    /// Creates an entry.
    public init(term: RaftTerm, index: RaftIndex, kind: Kind = .command, payload: [UInt8]) {
        self.term = term
        self.index = index
        self.kind = kind
        self.payload = payload
    }

    /// Bytes the entry accounts for in flow control (payload plus fixed header overhead).
    public var accountedBytes: Int { payload.count + 24 }
}

/// The state that must be durable before a node answers anything that depends on it.
public struct RaftHardState: Hashable, Sendable {
    /// The latest term this node has seen.
    public var term: RaftTerm
    /// The candidate this node voted for in `term`, if any.
    public var votedFor: RaftNodeID?

    /// Creates a hard state.
    public init(term: RaftTerm = 0, votedFor: RaftNodeID? = nil) {
        self.term = term
        self.votedFor = votedFor
    }
}

/// Identifies the log prefix a snapshot replaces.
public struct RaftSnapshotMetadata: Hashable, Sendable {
    /// The last log index the snapshot covers.
    public var index: RaftIndex
    /// The term of the entry at `index`.
    public var term: RaftTerm

    /// Creates snapshot metadata.
    public init(index: RaftIndex, term: RaftTerm) {
        self.index = index
        self.term = term
    }
}

/// An application state-machine snapshot covering the log through `metadata.index`.
public struct RaftSnapshot: Hashable, Sendable {
    /// Which prefix of the log the snapshot replaces.
    public var metadata: RaftSnapshotMetadata
    /// Opaque application bytes.
    public var data: [UInt8]

    /// Creates a snapshot.
    public init(metadata: RaftSnapshotMetadata, data: [UInt8]) {
        self.metadata = metadata
        self.data = data
    }
}

/// Everything a node had made durable, used to rebuild it after a restart.
public struct RaftPersistentState: Sendable {
    /// The last persisted term and vote.
    public var hardState: RaftHardState
    /// The latest durable snapshot, if any.
    public var snapshot: RaftSnapshot?
    /// Durable log entries in index order; entries covered by the snapshot are ignored.
    public var entries: [RaftLogEntry]
    /// The index through which the application's state machine is durably applied, if it tracks one
    /// (at least the snapshot index); nil means "the snapshot's index".
    public var appliedIndex: RaftIndex?

    /// Creates a persisted state; the defaults describe a node that has never run.
    public init(
        hardState: RaftHardState = RaftHardState(),
        snapshot: RaftSnapshot? = nil,
        entries: [RaftLogEntry] = [],
        appliedIndex: RaftIndex? = nil
    ) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
        self.appliedIndex = appliedIndex
    }
}

/// A node's role in the group.
public enum RaftRole: String, Hashable, Sendable {
    /// Follows a leader (or waits for one).
    case follower
    /// Asks for pre-votes without changing its term, to avoid disrupting a healthy leader.
    case preCandidate
    /// Asks for votes in a new term.
    case candidate
    /// Accepts proposals and replicates the log.
    case leader
}

/// What the driver reports as the node's status (`/status`, metrics, NOT_CONTROLLER hints).
public struct RaftStatus: Hashable, Sendable {
    /// This node's role.
    public var role: RaftRole
    /// This node's current term.
    public var term: RaftTerm
    /// The leader this node knows of in `term`, if any.
    public var leaderID: RaftNodeID?
    /// The highest index known to be committed.
    public var commitIndex: RaftIndex
}

/// Why a node refused to build from a configuration or persisted state.
public enum RaftError: Error, Hashable, Sendable {
    /// The configuration is inconsistent; the string says how.
    case invalidConfiguration(String)
    /// The persisted state is inconsistent (gap, out-of-order index, decreasing term).
    case corruptPersistentState(String)
}

/// Static configuration of one node.
public struct RaftConfiguration: Sendable {
    /// This node's id; must be one of `voters`.
    public var id: RaftNodeID
    /// The static voter set (1, 3 or 5 ids are typical), in any order.
    public var voters: [RaftNodeID]
    /// Lower bound of the randomized election timeout; also the leader lease and check-quorum period.
    public var electionTimeoutMin: Duration
    /// Upper bound of the randomized election timeout.
    public var electionTimeoutMax: Duration
    /// How often a leader sends heartbeats.
    public var heartbeatInterval: Duration
    /// Whether candidates run a pre-vote round first.
    public var preVote: Bool
    /// Whether a leader steps down when a majority has not answered for an election timeout.
    public var checkQuorum: Bool
    /// Most entries in one AppendEntries message.
    public var maxEntriesPerMessage: Int
    /// Most payload bytes in one AppendEntries message (at least one entry is always sent).
    public var maxBytesPerMessage: Int
    /// Most unacknowledged AppendEntries messages per follower.
    public var maxInflightMessages: Int
    /// Most unacknowledged bytes per follower.
    public var maxInflightBytes: Int
    /// Ask the application for a snapshot once this many entries were applied since the last one.
    public var snapshotThreshold: RaftIndex
    /// Entries kept in the log behind a new snapshot so slightly lagging followers avoid a snapshot transfer.
    public var entriesKeptAfterSnapshot: RaftIndex
    /// Size of one InstallSnapshot chunk.
    public var snapshotChunkBytes: Int
    /// Largest snapshot a follower accepts (bounds memory used by an incoming transfer).
    public var maxSnapshotBytes: Int

    /// Creates a configuration with defaults suited to a LAN controller quorum.
    public init(
        id: RaftNodeID,
        voters: [RaftNodeID],
        electionTimeoutMin: Duration = .milliseconds(1000),
        electionTimeoutMax: Duration = .milliseconds(2000),
        heartbeatInterval: Duration = .milliseconds(100),
        preVote: Bool = true,
        checkQuorum: Bool = true,
        maxEntriesPerMessage: Int = 512,
        maxBytesPerMessage: Int = 1 << 20,
        maxInflightMessages: Int = 16,
        maxInflightBytes: Int = 8 << 20,
        snapshotThreshold: RaftIndex = 10_000,
        entriesKeptAfterSnapshot: RaftIndex = 1_000,
        snapshotChunkBytes: Int = 1 << 20,
        maxSnapshotBytes: Int = 1 << 30
    ) {
        self.id = id
        self.voters = voters
        self.electionTimeoutMin = electionTimeoutMin
        self.electionTimeoutMax = electionTimeoutMax
        self.heartbeatInterval = heartbeatInterval
        self.preVote = preVote
        self.checkQuorum = checkQuorum
        self.maxEntriesPerMessage = maxEntriesPerMessage
        self.maxBytesPerMessage = maxBytesPerMessage
        self.maxInflightMessages = maxInflightMessages
        self.maxInflightBytes = maxInflightBytes
        self.snapshotThreshold = snapshotThreshold
        self.entriesKeptAfterSnapshot = entriesKeptAfterSnapshot
        self.snapshotChunkBytes = snapshotChunkBytes
        self.maxSnapshotBytes = maxSnapshotBytes
    }
}

extension Duration {
    /// Whole nanoseconds, clamped to zero for negative durations.
    var raftNanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        let (ns, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : ns &+ UInt64(attoseconds / 1_000_000_000)
    }
}

/// SplitMix64: a tiny seeded generator so election timeouts are reproducible from the seed.
struct RaftRandom: Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `lower...upper`.
    mutating func next(in lower: UInt64, _ upper: UInt64) -> UInt64 {
        guard upper > lower else { return lower }
        let span = upper - lower
        return span == .max ? next() : lower + next() % (span + 1)
    }
}
