/// Identifies one storage action so the driver can report when it (and all before it) became durable.
public typealias RaftStorageSequence = UInt64

/// Something that happened, fed to `RaftNode.step`.
public enum RaftInput: Sendable {
    /// Time passed; the driver calls this periodically (a few times per heartbeat interval).
    case tick
    /// A message arrived from a peer.
    case receive(RaftEnvelope)
    /// A client wants `payload` replicated; `id` is echoed in the answer.
    case propose(id: UInt64, payload: [UInt8])
    /// Every storage action with a sequence up to and including this one is durable (fsynced).
    case persisted(through: RaftStorageSequence)
    /// The application durably stored a snapshot of its state after applying entry `index`.
    case snapshotCreated(index: RaftIndex, data: [UInt8])
    /// Hand leadership to `to` (or the most caught-up voter when nil), e.g. before shutdown.
    case transferLeadership(to: RaftNodeID?)
}

/// Why a proposal was not appended.
public enum RaftProposalRejection: Hashable, Sendable {
    /// This node is not the leader; `leaderHint` is the leader it knows of, if any.
    case notLeader(leaderHint: RaftNodeID?)
    /// A leadership transfer is in progress; retry at the new leader.
    case transferringLeadership(to: RaftNodeID)
}

/// Something the driver must do, in the order returned.
///
/// Storage actions (`persistHardState`, `appendLog`, `installSnapshot`, `compactLog`) must be carried
/// out in order; the driver reports durability with `.persisted(through:)` carrying the highest
/// sequence whose action and all earlier ones are durable. `send` actions never depend on storage
/// that is not yet durable, so they may go out right away.
public enum RaftAction: Sendable {
    /// Send a message to a peer (best effort; Raft tolerates loss, delay, duplication, reordering).
    case send(RaftEnvelope)
    /// Durably store the term and vote.
    case persistHardState(RaftHardState, sequence: RaftStorageSequence)
    /// Delete every stored entry with index >= `entries.first.index`, then append `entries`.
    case appendLog([RaftLogEntry], sequence: RaftStorageSequence)
    /// Durably store the snapshot and restore the state machine from it; then delete stored entries up
    /// to its index, or the whole log if the stored entry at its index has a different term.
    case installSnapshot(RaftSnapshot, sequence: RaftStorageSequence)
    /// Stored entries up to and including `through` may be deleted (a durable snapshot covers them).
    case compactLog(through: RaftIndex)
    /// Apply these committed entries to the state machine, in order; each index is handed out once.
    case apply([RaftLogEntry])
    /// Snapshot the state machine once it has applied `throughIndex`, then report `.snapshotCreated`.
    case takeSnapshot(throughIndex: RaftIndex)
    /// Role, term or leader changed.
    case statusChanged(RaftStatus)
    /// The proposal was appended at `index` in `term` (it is committed once `apply` hands it out).
    case proposalAccepted(id: UInt64, index: RaftIndex, term: RaftTerm)
    /// The proposal was not appended.
    case proposalRejected(id: UInt64, RaftProposalRejection)
}
