import ClusterMetadata
@testable import ControllerCore
import Testing

/// Reassignment completion step by step: a move is proposed once its target broker is active, never twice at
/// once, and one that was not applied is retried after the delay.
@Suite struct ReassignmentMovesTests {
    /// Broker 1 leads t-0, which is being moved to broker 2 (fenced unless `targetActive`).
    static func metadata(targetActive: Bool) throws -> MetadataState {
        var state = MetadataState()
        var index: UInt64 = 0
        func apply(_ command: MetadataCommand) -> MetadataResult {
            index += 1
            return state.apply(command, index: index)
        }
        func register(_ id: NodeID) {
            _ = apply(.registerNode(NodeRegistration(id: id, kind: .broker, zone: "a", listener: "h:\(id)", admin: "h:\(id)")))
        }
        register(1)
        _ = apply(.createTopics([topic("t")]))
        register(2)
        _ = apply(.alterReassignments([ReassignmentRequest(topic: "t", partition: 0, replicas: [2])]))
        if !targetActive, let two = state.nodes[2] { _ = apply(.fenceNode(id: 2, incarnation: two.incarnation)) }
        try #require(state.pendingReassignments.count == 1)
        return state
    }

    static let key = PartitionKey(topic: "t", partition: 0)

    @Test func proposesOnceTheTargetIsActiveAndRetriesAfterTheDelay() throws {
        var moves = ReassignmentMoves(retryDelay: .seconds(1))
        let waiting = try Self.metadata(targetActive: false)
        #expect(moves.tick(now: .zero, pending: waiting.pendingReassignments, nodes: waiting.nodes).isEmpty)
        let ready = try Self.metadata(targetActive: true)
        let (pending, nodes) = (ready.pendingReassignments, ready.nodes)
        #expect(moves.tick(now: .zero, pending: pending, nodes: nodes) == [.proposeMove(Self.key, to: 2)])
        // In flight: not proposed again.
        #expect(moves.tick(now: .milliseconds(10), pending: pending, nodes: nodes).isEmpty)
        moves.moveFinished(Self.key, applied: false, now: .milliseconds(20))
        #expect(moves.tick(now: .milliseconds(1019), pending: pending, nodes: nodes).isEmpty)
        #expect(moves.tick(now: .milliseconds(1020), pending: pending, nodes: nodes) == [.proposeMove(Self.key, to: 2)])
        moves.moveFinished(Self.key, applied: true, now: .milliseconds(1030))
        // Applied: the next tick may propose at once (the metadata drops the reassignment once it is done).
        #expect(moves.tick(now: .milliseconds(1031), pending: pending, nodes: nodes) == [.proposeMove(Self.key, to: 2)])
    }
}
