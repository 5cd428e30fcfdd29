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
    private typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    private struct State {
        var shuttingDown = false
        var connections: [UInt64: any Channel] = [:]
        var deadline: Task<Void, Never>?
        /// Accepted connections not yet taken by the accept loop. NIO drops connections still buffered in the
        /// listener's stream when it closes, and a dropped `NIOAsyncChannel` traps on deinit (swift-nio
        /// issue 2813), so they are kept here until served or closed properly.
        var unclaimed: [ObjectIdentifier: Connection] = [:]
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
            self.beginShutdown(serverChannel: serverChannel.channel, serving: serving)
        }
        state.withLock { $0.deadline?.cancel() }
    }

    private func bind() async throws -> NIOAsyncChannel<Connection, Never> {
        let configuration = configuration
        let logger = logger
        let idle = TimeAmount.nanoseconds(configuration.idleTimeout.nanosecondsClamped)
        return try await ServerBootstrap(group: configuration.eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Shutdown half-closes inputs to stop reading while responses drain; without this NIO would treat
            // that as end of stream and close the whole channel. A peer's own EOF still closes (see `serve`).
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(allTimeout: idle))
                    try sync.addHandler(IdleCloseHandler(logger: logger, timeout: configuration.idleTimeout))
                    try sync.addHandler(ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: configuration.maxFrameSize)))
                    // Wrapping and registering happen under one lock so no wrapped connection can miss the
                    // registry (its writer must not be released unfinished).
                    return try self.state.withLock { state in
                        guard !state.listenerClosed else { throw KafkaTransportError.connectionClosed }
                        let connection = try Connection(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8))
                        )
                        state.unclaimed[ObjectIdentifier(channel)] = connection
                        return connection
                    }
                }
            }
    }

    private func beginShutdown(serverChannel: any Channel, serving: Task<Void, Never>) {
        let grace = configuration.shutdownGracePeriod
        let connections = state.withLock { state -> [any Channel] in
            guard !state.shuttingDown else { return [] }
            state.shuttingDown = true
            state.deadline = Task {
                try? await Task.sleep(for: grace)
                if !Task.isCancelled { serving.cancel() }
            }
            return Array(state.connections.values)
        }
        logger.info("shutting down", metadata: ["connections": "\(connections.count)"])
        serverChannel.close(promise: nil)
        // Half-closing the input ends each connection's request stream; responses can still be written.
        for channel in connections { channel.close(mode: .input, promise: nil) }
    }

    private func serve(_ serverChannel: NIOAsyncChannel<Connection, Never>) async {
        await withDiscardingTaskGroup { group in
            do {
                try await serverChannel.executeThenClose { inbound in
                    for try await connection in inbound {
                        // Claimed here, not in the child task, so the leftover sweep below can never see it.
                        _ = state.withLock { $0.unclaimed.removeValue(forKey: ObjectIdentifier(connection.channel)) }
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
                try? await connection.executeThenClose { _, _ in }
            }
        }
    }

    private func handle(_ connection: Connection) async {
        let id = nextConnectionID.wrappingAdd(1, ordering: .relaxed).newValue
        let channel = connection.channel
        let info = ConnectionInfo(id: id, remoteAddress: channel.remoteAddress)
        var logger = logger
        logger[metadataKey: "peer"] = "\(info.remoteAddress.map { "\($0)" } ?? "unknown")"
        logger[metadataKey: "connection.id"] = "\(id)"
        let lateArrival = state.withLock { state -> Bool in
            state.connections[id] = channel
            return state.shuttingDown
        }
        if lateArrival { channel.close(mode: .input, promise: nil) }
        defer { _ = state.withLock { $0.connections.removeValue(forKey: id) } }
        do {
            try await connection.executeThenClose { inbound, outbound in
                await self.serve(inbound: inbound, outbound: outbound, channel: channel, info: info, logger: logger)
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
        // executeThenClose returns only after the request task group, so no request of this connection is still running.
        await handler.connectionClosed(info)
    }

    private typealias Slot = (correlationId: Int32, action: OneShot<KafkaResponseAction>)

    private func serve(
        inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        channel: any Channel, info: ConnectionInfo, logger: Logger
    ) async {
        let permits = AsyncPermits(configuration.maxInFlightPerConnection)
        let queue = ReadyQueue<Slot> { $0.action.delivered != nil }
        await withDiscardingTaskGroup { group in
            group.addTask {
                await Self.writeResponses(queue, outbound: outbound, permits: permits, channel: channel, logger: logger)
            }
            var drain = false
            do {
                for try await frame in inbound {
                    guard await permits.acquire() else { break }
                    let request: KafkaRequestFrame
                    do {
                        request = try KafkaHeaders.parseRequest(frame: frame, resolver: configuration.headerVersionResolver)
                    } catch let KafkaTransportError.unsupportedVersion(apiKey, apiVersion) {
                        // The body layout is unknown, so the stream cannot be resynchronised: Kafka closes too.
                        logger.warning(
                            "closing connection: unsupported api key or version",
                            metadata: [
                                "kafka.api_key": "\(apiKey)", "kafka.api_version": "\(apiVersion)",
                                "error": "\(KafkaTransportError.unsupportedVersion(apiKey: apiKey, apiVersion: apiVersion))",
                            ]
                        )
                        break
                    } catch {
                        logger.warning("closing connection: malformed request header", metadata: ["error": "\(error)"])
                        break
                    }
                    let pending = await handler.accept(request, connection: info)
                    let slot = OneShot<KafkaResponseAction>()
                    switch pending.storage {
                    case let .ready(action):
                        slot.fulfill(action)
                    case let .later(complete):
                        group.addTask { slot.fulfill(await complete()) }
                    }
                    queue.push((request.correlationId, slot))
                }
                // The request stream ended: either our shutdown half-closed it (drain what was accepted) or the peer left.
                drain = state.withLock { $0.shuttingDown } && channel.isActive
            } catch let KafkaTransportError.frameTooLarge(size, limit) {
                logger.warning(
                    "closing connection: frame size outside limit",
                    metadata: ["frame.size": "\(size)", "frame.limit": "\(limit)"]
                )
            } catch {
                logger.debug("connection read failed", metadata: ["error": "\(error)"])
            }
            queue.finish()
            if !drain {
                permits.close()
                channel.close(promise: nil)
                group.cancelAll()
            }
        }
    }

    /// Responses written in one go when several are already computed: one write and one flush for the batch.
    private static var maxResponsesPerWrite: Int { 64 }

    private static func writeResponses(
        _ queue: ReadyQueue<Slot>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, permits: AsyncPermits,
        channel: any Channel, logger: Logger
    ) async {
        var batch: [ByteBuffer] = []
        while let head = await queue.next() {
            guard let headAction = await head.action.value() else { return }
            var settled = 0
            var closeReason: String?
            var next: (Slot, KafkaResponseAction)? = (head, headAction)
            while let (slot, action) = next {
                settled += 1
                switch action {
                case let .respond(body, headerVersion):
                    batch.append(KafkaHeaders.responsePrefix(
                        correlationId: slot.correlationId, headerVersion: headerVersion, bodySize: body.readableBytes
                    ))
                    batch.append(body)
                case .noResponse:
                    break
                case let .close(reason):
                    closeReason = reason
                }
                next = nil
                if closeReason == nil, settled < maxResponsesPerWrite, let ready = queue.popReady(),
                   case let .some(.some(action)) = ready.action.delivered {
                    next = (ready, action)
                }
            }
            if !batch.isEmpty {
                do {
                    try await outbound.write(contentsOf: batch)
                } catch {
                    logger.debug("response write failed", metadata: ["error": "\(error)"])
                    permits.close()
                    channel.close(promise: nil)
                    return
                }
                batch.removeAll(keepingCapacity: true)
            }
            if let closeReason {
                logger.info("closing connection at handler's request", metadata: ["reason": "\(closeReason)"])
                permits.close()
                await flushBarrier(channel)
                channel.close(promise: nil)
                return
            }
            permits.release(settled)
        }
        // Drained (graceful shutdown): the caller closes next, which must not cut off the last responses.
        await flushBarrier(channel)
    }

    /// Returns once everything written before it has reached the socket. A close while writes are still
    /// pending in NIO would discard them, truncating responses the client was promised.
    private static func flushBarrier(_ channel: any Channel) async {
        // Same event loop queue as the async writer's writes, so this empty write completes after them.
        try? await channel.writeAndFlush(ByteBuffer())
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

extension Duration {
    /// Whole nanoseconds, clamped to Int64.
    var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (total, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return total
    }
}
