import KafkaTransport
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// What `/status` returns: the fields every service has, plus service-specific `details` merged into the same JSON object.
public struct ServiceStatus: Encodable, Sendable {
    /// This instance's `--node-id`.
    public var nodeID: Int32
    /// `controller`, `broker`, `wal-writer`, …
    public var kind: String
    /// This instance's `--zone`.
    public var zone: String
    /// The incarnation epoch the controller handed out; 0 until one has been assigned.
    public var incarnation: Int64
    /// Extra fields (e.g. a controller's `role`, `term`, `leader_id`, `commit_index`); must encode as a keyed object.
    public var details: (any Encodable & Sendable)?

    /// A status with the common fields and optional service-specific ones.
    public init(nodeID: Int32, kind: String, zone: String, incarnation: Int64, details: (any Encodable & Sendable)? = nil) {
        self.nodeID = nodeID
        self.kind = kind
        self.zone = zone
        self.incarnation = incarnation
        self.details = details
    }

    private enum CodingKeys: String, CodingKey {
        case nodeID = "node_id"
        case kind, zone, incarnation
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(nodeID, forKey: .nodeID)
        try container.encode(kind, forKey: .kind)
        try container.encode(zone, forKey: .zone)
        try container.encode(incarnation, forKey: .incarnation)
        // A second keyed container on the same encoder adds to the same JSON object.
        try details?.encode(to: encoder)
    }
}

/// The admin HTTP endpoint every service exposes: `/healthz`, `/readyz`, `/metrics`, `/status` (GET only, keep-alive).
public final class AdminServer: Service, Sendable {
    /// What the server needs from the service it reports on.
    public struct Handlers: Sendable {
        /// Answers `/readyz`: true → 200, false → 503.
        public var ready: @Sendable () async -> Bool
        /// Answers `/status`.
        public var status: @Sendable () async -> ServiceStatus
        /// Answers `/metrics`; defaults to the process's ``FloeMetrics/registry``.
        public var metrics: @Sendable () -> [UInt8]

        /// Handlers for a service; `metrics` defaults to the process-wide Prometheus registry.
        public init(
            ready: @escaping @Sendable () async -> Bool,
            status: @escaping @Sendable () async -> ServiceStatus,
            metrics: (@Sendable () -> [UInt8])? = nil
        ) {
            self.ready = ready
            self.status = status
            self.metrics = metrics ?? { FloeMetrics.registry.emitToBuffer() }
        }
    }

    /// Requests with a body larger than this are answered 413 and the connection closed.
    public static let maxRequestBodyBytes = 16 * 1024

    /// Connections beyond this many are closed on accept, so a misbehaving client cannot exhaust memory or descriptors.
    public static let maxConnections = 128

    private let openConnections = Atomic<Int>(0)
    private let draining = Atomic<Bool>(false)

    /// From now on `/readyz` answers 503 whatever the readiness closure says, so load balancers stop sending work during a drain.
    public func markDraining() {
        draining.store(true, ordering: .relaxed)
    }

    private let channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    private let handlers: Handlers
    private let logger: Logger

    /// The address actually bound (with the real port when 0 was asked for).
    public let boundAddress: KafkaEndpoint

    /// Binds the listener now so its port is known before ``run()`` starts serving.
    public static func bind(
        _ address: KafkaEndpoint,
        handlers: Handlers,
        logger: Logger,
        idleTimeout: TimeAmount = .seconds(60),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: address.host, port: address.port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    // Probes and scrapers reconnect cheaply; a connection silent this long is abandoned.
                    try child.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: idleTimeout), CloseOnIdle(),
                    ], position: .first)
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: child
                    )
                }
            }
        let port = channel.channel.localAddress?.port ?? address.port
        return AdminServer(channel: channel, handlers: handlers, logger: logger, bound: KafkaEndpoint(host: address.host, port: port))
    }

    private init(
        channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>,
        handlers: Handlers, logger: Logger, bound: KafkaEndpoint
    ) {
        self.channel = channel
        self.handlers = handlers
        self.logger = logger
        self.boundAddress = bound
    }

    /// Serves until cancelled or until graceful shutdown, then closes the listener and every connection.
    public func run() async throws {
        logger.info("admin server listening", metadata: ["admin.address": "\(boundAddress)"])
        do {
            // Cancellation, not just closing the listener, so idle keep-alive connections end too.
            try await cancelWhenGracefulShutdown {
                try await self.channel.executeThenClose { inbound in
                    try await withThrowingDiscardingTaskGroup { group in
                        for try await connection in inbound {
                            guard self.openConnections.add(1, ordering: .relaxed).newValue <= Self.maxConnections else {
                                self.openConnections.subtract(1, ordering: .relaxed)
                                connection.channel.close(promise: nil)
                                continue
                            }
                            group.addTask {
                                await self.serve(connection)
                                self.openConnections.subtract(1, ordering: .relaxed)
                            }
                        }
                    }
                }
            }
        } catch is CancellationError where Task.isShuttingDownGracefully {
            // Being stopped on purpose is a clean exit.
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var bodyBytes = 0
                for try await part in inbound {
                    switch part {
                    case .head(let h):
                        head = h
                        bodyBytes = 0
                    case .body(let chunk):
                        bodyBytes += chunk.readableBytes
                        if bodyBytes > Self.maxRequestBodyBytes, let h = head {
                            try await Self.write(Response(status: .payloadTooLarge, text: "request too large\n"), for: h, keepAlive: false, to: outbound)
                            return
                        }
                    case .end:
                        guard let h = head else { continue }
                        head = nil
                        let response = await self.respond(to: h)
                        try await Self.write(response, for: h, keepAlive: h.isKeepAlive, to: outbound)
                        if !h.isKeepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("admin connection ended with an error", metadata: ["error": "\(error)"])
        }
    }

    struct Response {
        var status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]

        init(status: HTTPResponseStatus, text: String) {
            self.status = status
            self.body = Array(text.utf8)
        }

        init(status: HTTPResponseStatus, contentType: String, body: [UInt8]) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    func respond(to head: HTTPRequestHead) async -> Response {
        guard head.method == .GET || head.method == .HEAD else {
            return Response(status: .methodNotAllowed, text: "only GET is supported\n")
        }
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? head.uri
        switch path {
        case "/healthz":
            return Response(status: .ok, text: "ok\n")
        case "/readyz":
            if draining.load(ordering: .relaxed) { return Response(status: .serviceUnavailable, text: "draining\n") }
            return await handlers.ready()
                ? Response(status: .ok, text: "ready\n")
                : Response(status: .serviceUnavailable, text: "not ready\n")
        case "/metrics":
            return Response(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: handlers.metrics())
        case "/status":
            let status = await handlers.status()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            do {
                var body = Array(try encoder.encode(status))
                body.append(UInt8(ascii: "\n"))
                return Response(status: .ok, contentType: "application/json", body: body)
            } catch {
                return Response(status: .internalServerError, text: "status could not be encoded: \(error)\n")
            }
        default:
            return Response(status: .notFound, text: "not found; try /healthz /readyz /metrics /status\n")
        }
    }

    private static func write(
        _ response: Response, for request: HTTPRequestHead, keepAlive: Bool,
        to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        try await outbound.write(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
        if request.method != .HEAD {
            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
        }
        try await outbound.write(.end(nil))
    }
}

/// Closes a connection when `IdleStateHandler` reports it idle.
final class CloseOnIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
