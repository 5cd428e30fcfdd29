import NIOCore

/// Identifies one accepted connection to request handlers.
public struct ConnectionInfo: Sendable, Hashable {
    /// Unique per server instance, increasing in accept order.
    public var id: UInt64
    /// The peer's address, when the socket still knew it at accept time.
    public var remoteAddress: SocketAddress?

    /// Builds connection info by hand (tests, in-process callers).
    public init(id: UInt64, remoteAddress: SocketAddress?) {
        self.id = id
        self.remoteAddress = remoteAddress
    }
}

/// What the server does for one request once its response is computed.
public enum KafkaResponseAction: Sendable {
    /// Writes the body behind a response header of `headerVersion` (0: correlation id only, 1: plus tagged fields).
    case respond(body: ByteBuffer, headerVersion: Int16)
    /// Writes nothing (e.g. produce with acks=0) but keeps the position in the response order.
    case noResponse
    /// Closes the connection after all earlier responses have been written.
    case close(reason: String)
}

/// The order-insensitive remainder of a request's processing, run concurrently with other requests' remainders.
public struct KafkaPendingResponse: Sendable {
    enum Storage: Sendable {
        case ready(KafkaResponseAction)
        case later(@Sendable () async -> KafkaResponseAction)
        case future(EventLoopFuture<KafkaResponseAction>)
    }

    let storage: Storage

    /// A response computed later by `complete`, which runs concurrently with other requests' completions.
    public init(_ complete: @escaping @Sendable () async -> KafkaResponseAction) {
        storage = .later(complete)
    }

    /// A response that `future` delivers (no task is started for it; a failed future closes the connection).
    public init(future: EventLoopFuture<KafkaResponseAction>) {
        storage = .future(future)
    }

    /// A response that is already known (no task is started for it).
    public static func immediate(_ action: KafkaResponseAction) -> Self {
        Self(storage: .ready(action))
    }

    private init(storage: Storage) {
        self.storage = storage
    }

    /// The same response, passed through `transform` once known (e.g. to count its bytes).
    public func map(_ transform: @escaping @Sendable (KafkaResponseAction) -> KafkaResponseAction) -> KafkaPendingResponse {
        switch storage {
        case .ready(let action): Self(storage: .ready(transform(action)))
        case .later(let complete): Self(storage: .later { transform(await complete()) })
        case .future(let future): Self(storage: .future(future.map(transform)))
        }
    }
}

/// Serves the requests of every connection of a `KafkaServer`.
public protocol KafkaRequestHandler: Sendable {
    /// Called once per request, strictly in arrival order, never concurrently for one connection: do the order-sensitive part here.
    ///
    /// The returned completion runs concurrently with later requests' completions and should return
    /// promptly when its task is cancelled (connection closed or server shutdown deadline passed).
    func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse

    /// The same as `accept`, without a task, for requests whose order-sensitive part can run right away on
    /// the connection's event loop; nil (having done nothing) sends the request to `accept` instead.
    ///
    /// Called on the event loop, in arrival order, only while no `accept` is running for the connection.
    /// At light load it saves a task and its thread hand-offs per request.
    func acceptOnLoop(_ request: KafkaRequestFrame, connection: ConnectionInfo) -> KafkaPendingResponse?

    /// Called once after a connection has ended (peer closed, error, idle timeout or shutdown), after every
    /// completion of its requests has returned.
    func connectionClosed(_ connection: ConnectionInfo) async
}

extension KafkaRequestHandler {
    /// Most handlers keep no per-connection state.
    public func connectionClosed(_ connection: ConnectionInfo) async {}

    /// Most requests go through `accept`.
    public func acceptOnLoop(_ request: KafkaRequestFrame, connection: ConnectionInfo) -> KafkaPendingResponse? { nil }
}
