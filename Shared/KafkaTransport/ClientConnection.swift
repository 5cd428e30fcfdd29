import EventLoopTimers
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Settings shared by client connections.
public struct KafkaClientConfiguration: Sendable {
    /// Largest accepted response frame (value of the size field).
    public var maxFrameSize: Int
    /// How long a TCP connect may take before `connectionFailed`.
    public var connectTimeout: Duration
    /// Where connections run; the shared NIO singleton by default.
    public var eventLoopGroup: any EventLoopGroup

    /// Defaults: 100 MiB frames, 10 s connect timeout, the NIO singleton group.
    public init(
        maxFrameSize: Int = KafkaTransport.defaultMaxFrameSize,
        connectTimeout: Duration = .seconds(10),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.maxFrameSize = maxFrameSize
        self.connectTimeout = connectTimeout
        self.eventLoopGroup = eventLoopGroup
    }
}

/// One request on its way to the channel handler.
struct KafkaOutboundRequest: Sendable {
    var apiKey: Int16
    var apiVersion: Int16
    var headerVersion: Int16
    var responseHeaderVersion: Int16
    var clientId: String?
    var body: ByteBuffer
    /// Nil for one-way requests, which take no place in the response queue.
    var response: EventLoopPromise<ByteBuffer>?
    var timeout: Duration
}

/// One pipelined TCP connection to a Kafka-framed server.
///
/// Correlation ids are assigned in write order, so responses (which a Kafka server writes in request
/// order) are matched to the oldest outstanding request and checked against its id. When a request
/// times out the connection is closed: the server would still answer it later, and every response
/// after it would be stuck behind it. Other requests in flight then fail with `connectionClosed`.
public final class KafkaConnection: Sendable {
    private let channel: any Channel
    private let broken: BrokenFlag

    private init(channel: any Channel, broken: BrokenFlag) {
        self.channel = channel
        self.broken = broken
    }

    /// Opens a connection; throws `KafkaTransportError.connectionFailed` if the server cannot be reached.
    public static func connect(
        host: String, port: Int, configuration: KafkaClientConfiguration = .init()
    ) async throws(KafkaTransportError) -> KafkaConnection {
        let maxFrameSize = configuration.maxFrameSize
        let broken = BrokenFlag()
        do {
            let channel = try await ClientBootstrap(group: configuration.eventLoopGroup)
                .connectTimeout(.clamped(configuration.connectTimeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: maxFrameSize)))
                        try sync.addHandler(KafkaClientChannelHandler(broken: broken))
                    }
                }
                .connect(host: host, port: port)
                .get()
            return KafkaConnection(channel: channel, broken: broken)
        } catch {
            throw .connectionFailed("\(host):\(port): \(error)")
        }
    }

    /// False once the connection has closed for any reason.
    public var isActive: Bool { !broken.isSet && channel.isActive }

    /// The server's address.
    public var remoteAddress: SocketAddress? { channel.remoteAddress }

    /// Sends a request and returns the response body (response header stripped).
    ///
    /// Throws `timedOut` after `timeout` (and closes the connection), `connectionClosed` if the connection
    /// ends first, `CancellationError` if the calling task is cancelled (the connection stays usable).
    public func send(
        apiKey: Int16, apiVersion: Int16, headerVersion: Int16, responseHeaderVersion: Int16,
        clientId: String?, body: ByteBuffer, timeout: Duration
    ) async throws -> ByteBuffer {
        try Self.checkHeaderVersions(request: headerVersion, response: responseHeaderVersion)
        let response = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let request = KafkaOutboundRequest(
            apiKey: apiKey, apiVersion: apiVersion, headerVersion: headerVersion,
            responseHeaderVersion: responseHeaderVersion, clientId: clientId, body: body,
            response: response, timeout: timeout
        )
        return try await withTaskCancellationHandler {
            let written = channel.eventLoop.makePromise(of: Void.self)
            // A write that never reaches the handler (channel already closed) must still fail the caller.
            written.futureResult.whenFailure { _ in response.fail(KafkaTransportError.connectionClosed) }
            channel.writeAndFlush(request, promise: written)
            return try await response.futureResult.get()
        } onCancel: {
            // The request keeps its place in the queue so its eventual response is discarded, not misattributed.
            response.fail(CancellationError())
        }
    }

    /// Queues a request for writing before returning, and returns its response as a future.
    ///
    /// Unlike `send`, nothing is awaited before the request is queued, so requests enqueued one after
    /// another from one actor reach the wire in that order (an append pipeline that must keep offset order).
    public func enqueue(
        apiKey: Int16, apiVersion: Int16, headerVersion: Int16, responseHeaderVersion: Int16,
        clientId: String?, body: ByteBuffer, timeout: Duration
    ) -> EventLoopFuture<ByteBuffer> {
        do {
            try Self.checkHeaderVersions(request: headerVersion, response: responseHeaderVersion)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        let response = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let request = KafkaOutboundRequest(
            apiKey: apiKey, apiVersion: apiVersion, headerVersion: headerVersion,
            responseHeaderVersion: responseHeaderVersion, clientId: clientId, body: body,
            response: response, timeout: timeout
        )
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in response.fail(KafkaTransportError.connectionClosed) }
        channel.writeAndFlush(request, promise: written)
        return response.futureResult
    }

    /// Sends a request that gets no response (e.g. produce with acks=0); returns once it is written.
    public func sendOneway(
        apiKey: Int16, apiVersion: Int16, headerVersion: Int16, clientId: String?, body: ByteBuffer
    ) async throws {
        try Self.checkHeaderVersions(request: headerVersion, response: 0)
        let request = KafkaOutboundRequest(
            apiKey: apiKey, apiVersion: apiVersion, headerVersion: headerVersion, responseHeaderVersion: 0,
            clientId: clientId, body: body, response: nil, timeout: .zero
        )
        do {
            try await channel.writeAndFlush(request).get()
        } catch let error as KafkaTransportError {
            throw error
        } catch {
            throw KafkaTransportError.connectionClosed
        }
    }

    /// Closes the connection; requests in flight fail with `connectionClosed`.
    public func close() async {
        try? await channel.close()
    }

    private static func checkHeaderVersions(request: Int16, response: Int16) throws(KafkaTransportError) {
        guard (0...2).contains(request) else { throw .invalidArgument("request header version \(request)") }
        guard (0...1).contains(response) else { throw .invalidArgument("response header version \(response)") }
    }
}

/// Set, before any caller learns of the failure, once a connection can no longer be used; the channel's own
/// state lags behind because closing completes asynchronously.
final class BrokenFlag: Sendable {
    private let value = Atomic<Bool>(false)

    var isSet: Bool { value.load(ordering: .acquiring) }

    func set() { value.store(true, ordering: .releasing) }
}

/// Encodes requests, matches responses to requests in order, enforces per-request timeouts.
final class KafkaClientChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = KafkaOutboundRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var correlationId: Int32
        var responseHeaderVersion: Int16
        var promise: EventLoopPromise<ByteBuffer>
        var timeout: Scheduled<Void>?
    }

    private var nextCorrelationId: Int32 = 0
    private var pending = CircularBuffer<Pending>()
    private var failure: KafkaTransportError?
    private let broken: BrokenFlag

    init(broken: BrokenFlag) {
        self.broken = broken
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let failure {
            request.response?.fail(failure)
            promise?.fail(failure)
            return
        }
        let correlationId = nextCorrelationId
        nextCorrelationId = correlationId == .max ? 0 : correlationId + 1

        var prefix = context.channel.allocator.buffer(capacity: 16 + (request.clientId?.utf8.count ?? 0))
        KafkaHeaders.writeRequest(
            into: &prefix, apiKey: request.apiKey, apiVersion: request.apiVersion, correlationId: correlationId,
            clientId: request.clientId, headerVersion: request.headerVersion, body: ByteBuffer()
        )
        // The size field covers the body too, which is written separately to avoid copying it.
        let size = prefix.readableBytes - 4 + request.body.readableBytes
        guard size <= Int32.max else {
            let error = KafkaTransportError.frameTooLarge(size: size, limit: Int(Int32.max))
            request.response?.fail(error)
            promise?.fail(error)
            return
        }
        prefix.setInteger(Int32(size), at: prefix.readerIndex, endianness: .big)

        if let response = request.response {
            var entry = Pending(
                correlationId: correlationId, responseHeaderVersion: request.responseHeaderVersion,
                promise: response, timeout: nil
            )
            let loop = context.eventLoop.assumeIsolated()
            entry.timeout = loop.scheduleTask(in: .clamped(request.timeout)) { [weak self] in
                self?.timedOut(correlationId: correlationId, context: context)
            }
            pending.append(entry)
        }
        let written = promise ?? context.eventLoop.makePromise()
        written.futureResult.assumeIsolated().whenFailure { [weak self] error in
            self?.fail(with: .connectionClosed, context: context)
        }
        context.write(wrapOutboundOut(prefix), promise: nil)
        context.write(wrapOutboundOut(request.body), promise: written)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard failure == nil else { return }
        guard let first = pending.popFirst() else {
            fail(with: .malformedResponse("response without an outstanding request"), context: context)
            return
        }
        first.timeout?.cancel()
        do {
            let (correlationId, body) = try KafkaHeaders.parseResponse(
                frame: frame, headerVersion: first.responseHeaderVersion
            )
            guard correlationId == first.correlationId else {
                throw KafkaTransportError.malformedResponse(
                    "correlation id \(correlationId), expected \(first.correlationId)"
                )
            }
            first.promise.succeed(body)
        } catch {
            let transportError = error as? KafkaTransportError ?? .malformedResponse("\(error)")
            first.promise.fail(transportError)
            fail(with: transportError, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(with: .connectionClosed, context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(with: error as? KafkaTransportError ?? .connectionClosed, context: context)
    }

    private func timedOut(correlationId: Int32, context: ChannelHandlerContext) {
        guard let index = pending.firstIndex(where: { $0.correlationId == correlationId }) else { return }
        let entry = pending.remove(at: index)
        fail(with: .connectionClosed, context: context)
        entry.promise.fail(KafkaTransportError.timedOut)
    }

    /// Fails every outstanding request and closes: after any of these errors, the response stream can no
    /// longer be trusted to line up with the requests.
    private func fail(with error: KafkaTransportError, context: ChannelHandlerContext) {
        if failure == nil { failure = error }
        broken.set()
        let failed = pending
        pending.removeAll()
        context.close(promise: nil)
        for entry in failed {
            entry.timeout?.cancel()
            entry.promise.fail(error)
        }
    }
}
