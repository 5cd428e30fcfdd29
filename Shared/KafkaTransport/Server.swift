import EventLoopTimers
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Settings of a `KafkaServer`.
public struct KafkaServerConfiguration: Sendable {
    /// Address to listen on.
    public var host: String
    /// 0 picks a free port; `KafkaServer.boundAddress()` tells which.
    public var port: Int
    /// Decides each request's header version; nil = unsupported pair (connection closed, except ApiVersions).
    public var headerVersionResolver: KafkaHeaderVersionResolver
    /// Largest accepted request frame (value of the size field).
    public var maxFrameSize: Int
    /// Requests accepted on one connection whose responses are not yet written; reading pauses at this limit.
    public var maxInFlightPerConnection: Int
    /// A connection with neither reads nor writes for this long is closed (Kafka's connections.max.idle.ms).
    public var idleTimeout: Duration
    /// On shutdown, how long connections may take to write the responses of requests already accepted.
    public var shutdownGracePeriod: Duration
    /// Where the listener and connections run; the shared NIO singleton by default.
    public var eventLoopGroup: any EventLoopGroup

    /// Defaults follow Kafka: 100 MiB frames, 10-minute idle timeout; 64 requests in flight per connection.
    public init(
        host: String = "127.0.0.1",
        port: Int,
        headerVersionResolver: @escaping KafkaHeaderVersionResolver,
        maxFrameSize: Int = KafkaTransport.defaultMaxFrameSize,
        maxInFlightPerConnection: Int = 64,
        idleTimeout: Duration = .seconds(600),
        shutdownGracePeriod: Duration = .seconds(10),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.host = host
        self.port = port
        self.headerVersionResolver = headerVersionResolver
        self.maxFrameSize = maxFrameSize
        self.maxInFlightPerConnection = max(1, maxInFlightPerConnection)
        self.idleTimeout = idleTimeout
        self.shutdownGracePeriod = shutdownGracePeriod
        self.eventLoopGroup = eventLoopGroup
    }
}

/// A Kafka-framed TCP server: parses request headers, hands requests to a `KafkaRequestHandler` in order
/// and writes responses in request order while their computation overlaps (pipelining).
public final class KafkaServer<Handler: KafkaRequestHandler>: Sendable {
    private typealias Connection = KafkaServerConnection<Handler>

    private struct State {
        var shuttingDown = false
        var connections: [UInt64: Connection] = [:]
        var deadline: Task<Void, Never>?
        /// Accepted connections not yet taken by the accept loop. NIO drops connections still buffered in the
        /// listener's stream when it closes, so they are kept here until served or closed.
        var unclaimed: [UInt64: Connection] = [:]
        var listenerClosed = false
    }

    /// The settings the server was created with.
    public let configuration: KafkaServerConfiguration
    private let handler: Handler
    private let logger: Logger
    private let state = Mutex(State())
    private let nextConnectionID = Atomic<UInt64>(0)
    private let bound = AsyncResult<SocketAddress>()

    /// A server that does nothing until `run()`.
    public init(configuration: KafkaServerConfiguration, handler: Handler, logger: Logger) {
        self.configuration = configuration
        self.handler = handler
        self.logger = logger
    }

    /// The address the server listens on, once `run()` has bound it; throws if binding failed.
    public func boundAddress() async throws -> SocketAddress {
        try await bound.get()
    }

    /// The port the server listens on, once `run()` has bound it.
    public func boundPort() async throws -> Int {
        let address = try await boundAddress()
        guard let port = address.port else { throw KafkaTransportError.invalidArgument("bound address has no port") }
        return port
    }

    /// Serves until cancelled. On cancellation it stops accepting connections and reading requests, lets
    /// accepted requests' responses be written for up to `shutdownGracePeriod`, then closes everything.
    public func run() async throws {
        let serverChannel: NIOAsyncChannel<Connection, Never>
        do {
            serverChannel = try await bind()
        } catch {
            bound.set(.failure(error))
            throw error
        }
        if let address = serverChannel.channel.localAddress {
            bound.set(.success(address))
            logger.info("listening", metadata: ["address": "\(address)"])
        } else {
            bound.set(.failure(KafkaTransportError.invalidArgument("server channel has no local address")))
        }
        // Connections are served in a task of their own, not as children of this one, so that cancelling
        // run() starts a graceful drain instead of cancelling every request at once; run() still awaits it.
        let serving = Task { await self.serve(serverChannel) }
        await withTaskCancellationHandler {
            await serving.value
        } onCancel: {
            self.beginShutdown(serverChannel: serverChannel.channel)
        }
        state.withLock { $0.deadline?.cancel() }
    }

    private func bind() async throws -> NIOAsyncChannel<Connection, Never> {
        let configuration = configuration
        let logger = logger
        let handler = handler
        let idle = TimeAmount.clamped(configuration.idleTimeout)
        return try await ServerBootstrap(group: configuration.eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Shutdown half-closes inputs to stop reading while responses drain; without this NIO would treat
            // that as end of stream and close the whole channel. A peer's own EOF still closes (see
            // `KafkaServerConnection.stopReading`).
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let id = self.nextConnectionID.wrappingAdd(1, ordering: .relaxed).newValue
                    let info = ConnectionInfo(id: id, remoteAddress: channel.remoteAddress)
                    var connectionLogger = logger
                    connectionLogger[metadataKey: "peer"] = "\(info.remoteAddress.map { "\($0)" } ?? "unknown")"
                    connectionLogger[metadataKey: "connection.id"] = "\(id)"
                    let connection = Connection(
                        info: info, eventLoop: channel.eventLoop, handler: handler,
                        resolver: configuration.headerVersionResolver, maxInFlight: configuration.maxInFlightPerConnection,
                        logger: connectionLogger
                    )
                    // Checked and registered under one lock with the handlers added, so no connection can start
                    // serving unseen by the shutdown sweep.
                    return try self.state.withLock { state in
                        guard !state.listenerClosed else { throw KafkaTransportError.connectionClosed }
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(IdleStateHandler(allTimeout: idle))
                        try sync.addHandler(IdleCloseHandler(logger: logger, timeout: configuration.idleTimeout))
                        try sync.addHandler(ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: configuration.maxFrameSize)))
                        try sync.addHandler(connection)
                        state.connections[id] = connection
                        state.unclaimed[id] = connection
                        return connection
                    }
                }
            }
    }

    private func beginShutdown(serverChannel: any Channel) {
        let grace = configuration.shutdownGracePeriod
        let connections = state.withLock { state -> [Connection] in
            guard !state.shuttingDown else { return [] }
            state.shuttingDown = true
            state.deadline = Task {
                try? await LoopTimers.sleep(for: grace)
                if !Task.isCancelled { self.closeEveryConnection() }
            }
            return Array(state.connections.values)
        }
        logger.info("shutting down", metadata: ["connections": "\(connections.count)"])
        serverChannel.close(promise: nil)
        // Half-closing the input ends each connection's request stream; responses can still be written.
        for connection in connections { connection.stopReading() }
    }

    /// The grace period is over: whatever is still open is closed, and requests still running are cancelled.
    private func closeEveryConnection() {
        let connections = state.withLock { Array($0.connections.values) }
        for connection in connections { connection.close() }
    }

    private func serve(_ serverChannel: NIOAsyncChannel<Connection, Never>) async {
        await withDiscardingTaskGroup { group in
            do {
                try await serverChannel.executeThenClose { inbound in
                    for try await connection in inbound {
                        // Claimed here, not in the child task, so the leftover sweep below can never see it.
                        _ = state.withLock { $0.unclaimed.removeValue(forKey: connection.info.id) }
                        group.addTask { await self.handle(connection) }
                    }
                }
            } catch {
                if !state.withLock({ $0.shuttingDown }) {
                    logger.error("accept loop failed", metadata: ["error": "\(error)"])
                }
            }
            let dropped = state.withLock { state in
                state.listenerClosed = true
                defer { state.unclaimed.removeAll() }
                return Array(state.unclaimed.values)
            }
            for connection in dropped {
                connection.close()
                group.addTask { await self.handle(connection) }
            }
        }
    }

    private func handle(_ connection: Connection) async {
        let id = connection.info.id
        // Accepted after shutdown began: nothing new is read from it.
        if state.withLock({ $0.shuttingDown }) { connection.stopReading() }
        await connection.finished()
        _ = state.withLock { $0.connections.removeValue(forKey: id) }
    }
}

/// Closes a connection on the `IdleStateHandler`'s event.
private final class IdleCloseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let logger: Logger
    private let timeout: Duration

    init(logger: Logger, timeout: Duration) {
        self.logger = logger
        self.timeout = timeout
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            logger.info(
                "closing idle connection",
                metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "unknown")", "idle.timeout": "\(timeout)"]
            )
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

