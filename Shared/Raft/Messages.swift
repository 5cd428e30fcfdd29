/// Asks for a vote (or, with `isPreVote`, whether a vote would be granted) for `term`.
public struct RaftVoteRequest: Hashable, Sendable {
    /// The term the candidate runs in (for a pre-vote: the term it would run in).
    public var term: RaftTerm
    /// The last index of the candidate's log.
    public var lastLogIndex: RaftIndex
    /// The term of the candidate's last entry.
    public var lastLogTerm: RaftTerm
    /// A pre-vote probes electability and changes no state on the receiver.
    public var isPreVote: Bool
    /// Set when the current leader asked for this election, so voters ignore their leader lease.
    public var isLeadershipTransfer: Bool

    /// Creates a vote request.
    public init(term: RaftTerm, lastLogIndex: RaftIndex, lastLogTerm: RaftTerm, isPreVote: Bool, isLeadershipTransfer: Bool = false) {
        self.term = term
        self.lastLogIndex = lastLogIndex
        self.lastLogTerm = lastLogTerm
        self.isPreVote = isPreVote
        self.isLeadershipTransfer = isLeadershipTransfer
    }
}

/// Answers a vote request.
public struct RaftVoteResponse: Hashable, Sendable {
    /// The voter's term, or the requested term for a granted pre-vote.
    public var term: RaftTerm
    /// Whether the (pre-)vote is granted.
    public var granted: Bool
    /// Echoes the request's `isPreVote`.
    public var isPreVote: Bool

    /// Creates a vote response.
    public init(term: RaftTerm, granted: Bool, isPreVote: Bool) {
        self.term = term
        self.granted = granted
        self.isPreVote = isPreVote
    }
}

/// Replicates entries (or, empty, serves as heartbeat and commit notice).
public struct RaftAppendRequest: Hashable, Sendable {
    /// The leader's term.
    public var term: RaftTerm
    /// The index just before `entries`.
    public var prevLogIndex: RaftIndex
    /// The term of the entry at `prevLogIndex`.
    public var prevLogTerm: RaftTerm
    /// Consecutive entries starting at `prevLogIndex + 1`.
    public var entries: [RaftLogEntry]
    /// The leader's commit index.
    public var leaderCommit: RaftIndex

    /// Creates an append request.
    public init(term: RaftTerm, prevLogIndex: RaftIndex, prevLogTerm: RaftTerm, entries: [RaftLogEntry], leaderCommit: RaftIndex) {
        self.term = term
        self.prevLogIndex = prevLogIndex
        self.prevLogTerm = prevLogTerm
        self.entries = entries
        self.leaderCommit = leaderCommit
    }
}

/// Answers an append request.
public struct RaftAppendResponse: Hashable, Sendable {
    /// The follower's term.
    public var term: RaftTerm
    /// Whether the log matched at `rejectedIndex`'s position and the entries were taken.
    public var success: Bool
    /// On success: the follower's durable log matches the leader's through this index.
    public var matchIndex: RaftIndex
    /// On rejection: the request's `prevLogIndex`.
    public var rejectedIndex: RaftIndex
    /// On rejection: the term of the follower's entry at `rejectedIndex`, nil if its log is shorter.
    public var conflictTerm: RaftTerm?
    /// On rejection: the first index of `conflictTerm` in the follower's log, or its last index + 1.
    public var conflictIndex: RaftIndex

    /// Creates an append response.
    public init(term: RaftTerm, success: Bool, matchIndex: RaftIndex, rejectedIndex: RaftIndex = 0, conflictTerm: RaftTerm? = nil, conflictIndex: RaftIndex = 0) {
        self.term = term
        self.success = success
        self.matchIndex = matchIndex
        self.rejectedIndex = rejectedIndex
        self.conflictTerm = conflictTerm
        self.conflictIndex = conflictIndex
    }
}

/// One chunk of a snapshot sent to a follower whose next entry the leader no longer has.
public struct RaftSnapshotRequest: Hashable, Sendable {
    /// The leader's term.
    public var term: RaftTerm
    /// Which snapshot the chunk belongs to.
    public var metadata: RaftSnapshotMetadata
    /// Byte offset of `data` within the snapshot.
    public var offset: UInt64
    /// The chunk's bytes.
    public var data: [UInt8]
    /// Whether this is the last chunk.
    public var done: Bool

    /// Creates a snapshot chunk.
    public init(term: RaftTerm, metadata: RaftSnapshotMetadata, offset: UInt64, data: [UInt8], done: Bool) {
        self.term = term
        self.metadata = metadata
        self.offset = offset
        self.data = data
        self.done = done
    }
}

/// Answers a snapshot chunk.
public struct RaftSnapshotResponse: Hashable, Sendable {
    /// The follower's term.
    public var term: RaftTerm
    /// Which snapshot this answers.
    public var metadata: RaftSnapshotMetadata
    /// The offset the follower expects next (the leader resumes from here).
    public var nextOffset: UInt64
    /// Whether the follower's log is now durable through `matchIndex` (snapshot installed or not needed).
    public var installed: Bool
    /// When `installed`: the follower matches the leader through this index.
    public var matchIndex: RaftIndex

    /// Creates a snapshot response.
    public init(term: RaftTerm, metadata: RaftSnapshotMetadata, nextOffset: UInt64, installed: Bool, matchIndex: RaftIndex) {
        self.term = term
        self.metadata = metadata
        self.nextOffset = nextOffset
        self.installed = installed
        self.matchIndex = matchIndex
    }
}

/// A Raft message between voters.
public enum RaftMessage: Hashable, Sendable {
    /// Vote or pre-vote request.
    case vote(RaftVoteRequest)
    /// Vote or pre-vote answer.
    case voteResponse(RaftVoteResponse)
    /// AppendEntries (also heartbeat).
    case append(RaftAppendRequest)
    /// AppendEntries answer.
    case appendResponse(RaftAppendResponse)
    /// InstallSnapshot chunk.
    case snapshot(RaftSnapshotRequest)
    /// InstallSnapshot answer.
    case snapshotResponse(RaftSnapshotResponse)
    /// The leader asks its chosen successor to start an election now (leadership transfer).
    case timeoutNow(term: RaftTerm)

    /// The sender's term carried by every message.
    public var term: RaftTerm {
        switch self {
        case let .vote(m): m.term
        case let .voteResponse(m): m.term
        case let .append(m): m.term
        case let .appendResponse(m): m.term
        case let .snapshot(m): m.term
        case let .snapshotResponse(m): m.term
        case let .timeoutNow(term): term
        }
    }
}

/// A message with its sender and recipient.
public struct RaftEnvelope: Hashable, Sendable {
    /// The sending voter.
    public var from: RaftNodeID
    /// The receiving voter.
    public var to: RaftNodeID
    /// The message.
    public var message: RaftMessage

    /// Creates an envelope.
    public init(from: RaftNodeID, to: RaftNodeID, message: RaftMessage) {
        self.from = from
        self.to = to
        self.message = message
    }
}
