/// Kafka-framed TCP transport (server and client) shared by every Floe service.
public enum KafkaTransport {
    /// Default largest frame (size field value) accepted on a connection: 100 MiB, as Kafka's `socket.request.max.bytes`.
    public static let defaultMaxFrameSize = 100 * 1024 * 1024
}

/// A failure of the Kafka-framed transport, as seen by a caller of the client or by the server's connection loop.
public enum KafkaTransportError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The TCP connection could not be established.
    case connectionFailed(String)
    /// The request got no response within its timeout; the connection it used has been closed.
    case timedOut
    /// The connection closed (or was closed) before the response arrived.
    case connectionClosed
    /// A frame's size field was negative or above the configured limit.
    case frameTooLarge(size: Int, limit: Int)
    /// A response could not be matched or parsed (wrong correlation id, truncated header…).
    case malformedResponse(String)
    /// A request header could not be parsed.
    case malformedRequest(String)
    /// The request's (api key, version) pair is not served here.
    case unsupportedVersion(apiKey: Int16, apiVersion: Int16)
    /// An argument given by the caller is out of range (e.g. a header version that does not exist).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .connectionFailed(reason): "connection failed: \(reason)"
        case .timedOut: "request timed out"
        case .connectionClosed: "connection closed"
        case let .frameTooLarge(size, limit): "frame size \(size) outside 0...\(limit)"
        case let .malformedResponse(reason): "malformed response: \(reason)"
        case let .malformedRequest(reason): "malformed request: \(reason)"
        case let .unsupportedVersion(apiKey, apiVersion): "unsupported api key \(apiKey) version \(apiVersion)"
        case let .invalidArgument(reason): "invalid argument: \(reason)"
        }
    }
}
