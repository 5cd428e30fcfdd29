import ClusterMetadata
import ControllerClient

/// Broker sessions and reassignment completion at the leader: requests and ticks go to `BrokerSessions` and
/// `ReassignmentMoves`, whose proposals this driver submits and whose answers it reports back.
extension ControllerNode {
    /// Records a heartbeat at the leader; returns an error code (0, NOT_CONTROLLER, STALE_BROKER_EPOCH,
    /// BROKER_ID_NOT_REGISTERED) and whether the node is fenced.
    /// `connection` is the server connection it arrived on: when that closes, the session is cut short.
    public func heartbeat(nodeId: NodeID, incarnation: Int64, connection: UInt64? = nil) -> (errorCode: Int16, fenced: Bool) {
        guard !stopped else { return (notControllerErrorCode, false) }
        let (answer, actions) = sessions.heartbeat(
            node: nodeId, incarnation: incarnation, record: metadata.nodes[nodeId], connection: connection, now: clock.now)
        carryOut(actions)
        return (answer.errorCode, answer.fenced)
    }

    /// Notes that a node just registered (over `connection`, if known), so its session starts now.
    public func sessionStarted(nodeId: NodeID, connection: UInt64? = nil) {
        sessions.sessionStarted(node: nodeId, connection: connection, now: clock.now)
    }

    /// A server connection ended: brokers whose latest heartbeat came over it get `sessionCloseGrace` to
    /// heartbeat again (see `BrokerSessions.connectionClosed`).
    public func connectionClosed(_ connection: UInt64) {
        guard !stopped else { return }
        carryOut(sessions.connectionClosed(connection, nodes: metadata.nodes, now: clock.now))
    }

    /// The server connection a node's session is bound to, if any.
    func sessionConnectionForTesting(_ nodeId: NodeID) -> UInt64? { sessions.connection(of: nodeId) }

    func carryOut(_ actions: [BrokerSessions.Action]) {
        for action in actions {
            switch action {
            case let .proposeFence(node, incarnation, reason, token):
                switch reason {
                case .sessionTimedOut:
                    logger.info("fencing node after session timeout", metadata: ["fenced.node": "\(node)"])
                case .connectionClosed:
                    logger.info("fencing node: its heartbeat connection closed and it did not heartbeat again within the grace",
                                metadata: ["fenced.node": "\(node)", "grace": "\(configuration.sessionCloseGrace)"])
                    instruments.closeFenced.increment()
                }
                instruments.fenced.increment()
                submit(.fenceNode(id: node, incarnation: incarnation), timeout: .seconds(5),
                       waiter: .session(node: node, token: token, action: "fence"))
            case let .proposeUnfence(node, incarnation, token):
                submit(.unfenceNode(id: node, incarnation: incarnation), timeout: .seconds(5),
                       waiter: .session(node: node, token: token, action: "unfence"))
            case let .closeGraceStarted(node, connection, _):
                logger.debug("session connection closed", metadata: ["session.node": "\(node)", "connection.id": "\(connection)"])
            }
        }
    }

    func carryOut(_ actions: [ReassignmentMoves.Action]) {
        for case let .proposeMove(key, target) in actions {
            submit(.moveLeader(topic: key.topic, partition: key.partition, to: target), timeout: .seconds(5),
                   waiter: .reassignment(key))
        }
    }

    /// Tells the waiter of a proposal how it ended.
    func deliver(_ outcome: ProposalOutcome, to waiter: ProposalWaiter) {
        switch waiter {
        case let .caller(continuation):
            continuation.resume(returning: outcome)
        case let .session(node, token, action):
            sessions.proposalFinished(node: node, token: token)
            if case let .applied(result, _) = outcome, result.errorCode != 0 {
                logger.debug("\(action) rejected", metadata: ["node": "\(node)", "error": "\(result)"])
            }
        case let .reassignment(key):
            var applied = false
            if case let .applied(result, _) = outcome, result.errorCode == 0 { applied = true }
            if !applied {
                logger.info("reassignment move not applied; retrying in a second",
                            metadata: ["partition": "\(key.topic)-\(key.partition)", "outcome": "\(outcome)"])
            }
            reassignments.moveFinished(key, applied: applied, now: clock.now)
        }
    }
}
