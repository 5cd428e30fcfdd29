import ClusterMetadata

/// Completes partition reassignments at the leader. Floe keeps one copy of the data, in object storage, so a
/// reassignment needs no copying: as soon as its target broker is active the leader proposes the leadership
/// move. One move per partition is in flight at a time; one that was not applied is proposed again no sooner
/// than `retryDelay` after it ended. A deterministic state machine driven by the leader's ticks.
public struct ReassignmentMoves: Sendable {
    /// What the driver carries out.
    public enum Action: Sendable, Hashable {
        /// Propose `.moveLeader(topic:partition:to:)`; report its end with `moveFinished`.
        case proposeMove(PartitionKey, to: NodeID)
    }

    /// How long a move that was not applied waits before it is proposed again.
    public let retryDelay: Duration
    private var inFlight: Set<PartitionKey> = []
    private var retryAt: [PartitionKey: Duration] = [:]

    /// No moves in flight.
    public init(retryDelay: Duration = .seconds(1)) {
        self.retryDelay = retryDelay
    }

    /// Proposes the moves of `pending` (the applied metadata's reassignments in key order) whose target is an
    /// active broker in `nodes` and that are neither in flight nor waiting to retry.
    public mutating func tick(now: Duration, pending: [PendingReassignment], nodes: [NodeID: NodeRecord]) -> [Action] {
        retryAt = retryAt.filter { $0.value > now }
        var actions: [Action] = []
        for reassignment in pending {
            let key = PartitionKey(topic: reassignment.topic, partition: reassignment.partition)
            guard !inFlight.contains(key), retryAt[key] == nil,
                  let target = nodes[reassignment.target], target.state == .active, target.kind == .broker
            else { continue }
            inFlight.insert(key)
            actions.append(.proposeMove(key, to: reassignment.target))
        }
        return actions
    }

    /// The move of `key` ended; one that was not `applied` (rejected, timed out, lost with the leadership) is
    /// retried after `retryDelay`.
    public mutating func moveFinished(_ key: PartitionKey, applied: Bool, now: Duration) {
        guard inFlight.remove(key) != nil else { return }
        if !applied { retryAt[key] = now + retryDelay }
    }
}
