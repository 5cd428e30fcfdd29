import KafkaProtocol

/// A controller answer to a call that only the Raft leader serves: on NOT_CONTROLLER it names the leader
/// (its id and HOST:PORT, when known) so the client goes there next.
public protocol ControllerLeaderAnswer: KafkaResponse {
    var errorCode: Int16 { get set }
    var leaderId: Int32 { get set }
    var leaderEndpoint: String? { get set }
    /// The error's text, for answers that carry one.
    var errorMessage: String? { get }
}

extension ControllerWriteResponse: ControllerLeaderAnswer {}

extension ControllerRegisterResponse: ControllerLeaderAnswer {}

extension ControllerHeartbeatResponse: ControllerLeaderAnswer {
    /// Heartbeat answers carry no error text.
    public var errorMessage: String? { nil }
}
