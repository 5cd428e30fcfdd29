import ClusterMetadata
import ControllerClient

/// The heartbeat sessions the controller leader keeps for registered nodes: a node that stops heartbeating for
/// the session timeout, or a broker whose heartbeat connection closed and that does not heartbeat again within
/// the close grace, is proposed fenced; a fenced node that heartbeats with its current incarnation is proposed
/// unfenced. A deterministic state machine: time comes in as `now` (a `Duration` since the driver's clock
/// origin), node records from the applied metadata, and proposals go out as actions whose ends the driver
/// reports back with `proposalFinished`.
public struct BrokerSessions: Sendable {
    /// Why a fence was proposed.
    public enum FenceReason: Sendable, Hashable {
        /// No heartbeat for longer than the session timeout.
        case sessionTimedOut
        /// The latest heartbeat's connection closed and no heartbeat followed within the close grace.
        case connectionClosed
    }

    /// What the driver carries out.
    public enum Action: Sendable, Hashable {
        /// Propose `.fenceNode(id: node, incarnation: incarnation)`; report its end with `token`.
        case proposeFence(node: NodeID, incarnation: Int64, reason: FenceReason, token: UInt64)
        /// Propose `.unfenceNode(id: node, incarnation: incarnation)`; report its end with `token`.
        case proposeUnfence(node: NodeID, incarnation: Int64, token: UInt64)
        /// The connection `node` last heartbeated over closed: it has until `deadline` to heartbeat again.
        case closeGraceStarted(node: NodeID, connection: UInt64, deadline: Duration)
    }

    /// The answer to one heartbeat.
    public struct HeartbeatAnswer: Sendable, Hashable {
        /// 0, NOT_CONTROLLER, STALE_BROKER_EPOCH or BROKER_ID_NOT_REGISTERED.
        public var errorCode: Int16
        /// Whether the node is fenced in the applied metadata.
        public var fenced: Bool
    }

    /// How long a node may go without a heartbeat.
    public let sessionTimeout: Duration
    /// How long a broker whose heartbeat connection closed has to heartbeat again.
    public let closeGrace: Duration
    /// How often sessions are checked for timeouts and passed close deadlines.
    public let checkInterval: Duration
    /// A check that comes this much later than the one before means this controller was not running
    /// (starved of CPU, stopped, paused by a slow disk): heartbeats that arrived meanwhile may still sit
    /// unread in its sockets, so the time it did not look does not count against any session (see `tick`).
    public let stallThreshold: Duration

    /// Whether this controller leads: only the leader answers heartbeats and tracks sessions.
    public private(set) var leading = false
    private var draining = false
    /// The last check of this term (nil until the first: a new leader's first check has no gap to measure).
    private var lastCheck: Duration?
    private var lastHeartbeat: [NodeID: Duration] = [:]
    /// The server connection each node's latest heartbeat (or registration) arrived on.
    private var sessionConnection: [NodeID: UInt64] = [:]
    /// Shortened deadlines of brokers whose session connection closed and that have not heartbeated since.
    private var closeDeadline: [NodeID: Duration] = [:]
    /// The token of the one proposal in flight for a node; a node never has two.
    private var inFlight: [NodeID: UInt64] = [:]
    private var nextToken: UInt64 = 1

    /// Sessions with these limits; not leading until told so. `stallThreshold` defaults to half the session
    /// timeout (at least ten check intervals).
    public init(sessionTimeout: Duration, closeGrace: Duration, checkInterval: Duration = .milliseconds(100), stallThreshold: Duration? = nil) {
        self.sessionTimeout = sessionTimeout
        self.closeGrace = closeGrace
        self.checkInterval = checkInterval
        self.stallThreshold = max(stallThreshold ?? sessionTimeout / 2, checkInterval * 10)
    }

    /// When the next check is due (meaningful while leading).
    public var nextCheck: Duration { (lastCheck ?? .zero) + checkInterval }

    /// The server connection a node's session is bound to, if any.
    public func connection(of node: NodeID) -> UInt64? { sessionConnection[node] }

    /// The token of the proposal in flight for `node`, if any.
    public func proposalInFlight(for node: NodeID) -> UInt64? { inFlight[node] }

    /// This controller became or stopped being the leader. A new leader has no heartbeat history: every node
    /// starts a fresh session, and answers to proposals made in an earlier term are ignored.
    public mutating func leadershipChanged(leading: Bool) {
        guard leading != self.leading else { return }
        self.leading = leading
        lastCheck = nil
        lastHeartbeat.removeAll()
        sessionConnection.removeAll()
        closeDeadline.removeAll()
        inFlight.removeAll()
    }

    /// This controller is stopping: its connections close because of that, so closes no longer cut sessions short.
    public mutating func beginDraining() {
        draining = true
    }

    /// A heartbeat from `node` at `incarnation` over `connection` (nil when its origin is unknown); `record` is the
    /// node's entry in the applied metadata.
    public mutating func heartbeat(
        node: NodeID, incarnation: Int64, record: NodeRecord?, connection: UInt64?, now: Duration
    ) -> (answer: HeartbeatAnswer, actions: [Action]) {
        guard leading else { return (HeartbeatAnswer(errorCode: notControllerErrorCode, fenced: false), []) }
        guard let record else { return (HeartbeatAnswer(errorCode: MetadataErrorCode.brokerIdNotRegistered, fenced: false), []) }
        // A heartbeat from an earlier incarnation is a process that has been replaced: it keeps nothing alive.
        guard record.incarnation == incarnation else {
            return (HeartbeatAnswer(errorCode: MetadataErrorCode.staleBrokerEpoch, fenced: false), [])
        }
        lastHeartbeat[node] = now
        bind(node, to: connection)
        let fenced = record.state == .fenced
        guard fenced, inFlight[node] == nil else { return (HeartbeatAnswer(errorCode: 0, fenced: fenced), []) }
        let token = take(node)
        return (HeartbeatAnswer(errorCode: 0, fenced: true), [.proposeUnfence(node: node, incarnation: incarnation, token: token)])
    }

    /// A node registered (over `connection`, if known): its session starts at `now`.
    public mutating func sessionStarted(node: NodeID, connection: UInt64?, now: Duration) {
        lastHeartbeat[node] = now
        bind(node, to: connection)
    }

    /// A server connection ended. Brokers whose latest heartbeat came over it get `closeGrace` to heartbeat again:
    /// a killed process's sockets are closed by the kernel, so this spots a dead node long before its session
    /// times out, while a live node reconnects and heartbeats well within the grace. `nodes` is the applied
    /// metadata's node table.
    public mutating func connectionClosed(_ connection: UInt64, nodes: [NodeID: NodeRecord], now: Duration) -> [Action] {
        guard leading, !draining else { return [] }
        let deadline = now + closeGrace
        var actions: [Action] = []
        for node in sessionConnection.keys.sorted() where sessionConnection[node] == connection {
            sessionConnection[node] = nil
            // Brokers only. A dead broker's partitions move to live brokers at once; a WAL writer's tail can only
            // move once that writer is back to upload it, so fencing a restarting writer early just sends its
            // streams through a cross-zone hand-off while it replays.
            guard nodes[node]?.kind == .broker else { continue }
            let shortened = min(closeDeadline[node] ?? deadline, deadline)
            closeDeadline[node] = shortened
            actions.append(.closeGraceStarted(node: node, connection: connection, deadline: shortened))
        }
        return actions
    }

    /// Time passed; at most once per `checkInterval`, proposes fencing every active node (controllers aside) whose
    /// session ran out. `nodes` is the applied metadata's nodes in id order.
    ///
    /// A check more than `stallThreshold` after the previous one first moves every session and close deadline
    /// forward by the time this controller was away (the gap less one check interval): a stalled controller
    /// must not fence the brokers whose heartbeats it has not read yet. A node that really died is then fenced
    /// that much later, once.
    public mutating func tick(now: Duration, nodes: [NodeRecord]) -> [Action] {
        guard leading else { return [] }
        if let lastCheck {
            guard now - lastCheck >= checkInterval else { return [] }
            let gap = now - lastCheck
            if gap > stallThreshold {
                // Never past now: a heartbeat read after the stall already restarted its session.
                let away = gap - checkInterval
                for (node, seen) in lastHeartbeat { lastHeartbeat[node] = min(seen + away, now) }
                for (node, deadline) in closeDeadline { closeDeadline[node] = min(deadline + away, now + closeGrace) }
            }
        }
        lastCheck = now
        var actions: [Action] = []
        for record in nodes where record.state == .active && record.kind != .controller {
            guard let seen = lastHeartbeat[record.id] else {
                // Registered before this leader's term: its session starts with the first check.
                lastHeartbeat[record.id] = now
                continue
            }
            let timedOut = now - seen > sessionTimeout
            let closed = !draining && closeDeadline[record.id].map { $0 <= now } == true
            guard timedOut || closed, inFlight[record.id] == nil else { continue }
            let token = take(record.id)
            actions.append(.proposeFence(
                node: record.id, incarnation: record.incarnation, reason: timedOut ? .sessionTimedOut : .connectionClosed,
                token: token))
        }
        return actions
    }

    /// The proposal `token` for `node` ended, however it ended: the node may be proposed again. Answers to
    /// proposals this machine no longer tracks (made before a change of leadership) change nothing.
    public mutating func proposalFinished(node: NodeID, token: UInt64) {
        if inFlight[node] == token { inFlight[node] = nil }
    }

    private mutating func bind(_ node: NodeID, to connection: UInt64?) {
        closeDeadline[node] = nil
        // A heartbeat of unknown origin (in-process callers) must not leave an older connection in charge.
        sessionConnection[node] = connection
    }

    private mutating func take(_ node: NodeID) -> UInt64 {
        let token = nextToken
        nextToken += 1
        inFlight[node] = token
        return token
    }
}
