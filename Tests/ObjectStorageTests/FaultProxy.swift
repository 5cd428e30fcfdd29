import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A loopback HTTP/1.1 proxy in front of the S3 server that injects faults into the next requests.
/// It forces `Connection: close` so each request has its own connection and can be judged alone.
final class FaultProxy: Sendable {
    enum Fault: Sendable, Equatable {
        /// Forward untouched.
        case pass
        /// Answer with this status and S3 error code without forwarding.
        case status(Int, code: String)
        /// Read the request and never answer (the client's timeout fires).
        case stall
        /// Close the connection as soon as the request headers arrive.
        case drop
        /// Forward the headers and half the body, then cut both connections.
        case dropMidBody
        /// Forward the whole request, let the server act on it, then cut the client off before the answer.
        case dropResponse
    }

    struct State {
        var faults: [Fault] = []
        var requests = 0
        var injected = 0
    }

    let port: Int
    private let state: NIOLockedValueBox<State>
    private let channel: any Channel

    private init(port: Int, state: NIOLockedValueBox<State>, channel: any Channel) {
        self.port = port
        self.state = state
        self.channel = channel
    }

    static func start(upstreamPort: Int) async throws -> FaultProxy {
        let state = NIOLockedValueBox(State())
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(FrontHandler(upstreamPort: upstreamPort, state: state))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        guard let port = channel.localAddress?.port else { throw TestSetupError("proxy has no port") }
        return FaultProxy(port: port, state: state, channel: channel)
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Queues faults for the next requests, in order; requests after them pass.
    func inject(_ faults: [Fault]) {
        state.withLockedValue { $0.faults.append(contentsOf: faults) }
    }

    var requests: Int { state.withLockedValue { $0.requests } }
    var injected: Int { state.withLockedValue { $0.injected } }
    var pendingFaults: Int { state.withLockedValue { $0.faults.count } }

    func stop() async throws {
        try await channel.close()
    }
}

/// Handles one client connection: buffers until the request head is complete, then applies a fault.
private final class FrontHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let upstreamPort: Int
    private let state: NIOLockedValueBox<FaultProxy.State>
    private var buffered = ByteBuffer()
    private var fault: FaultProxy.Fault?
    private var bodyLength = 0
    private var bodySeen = 0
    private var upstream: (any Channel)?
    private var pendingToUpstream: [ByteBuffer] = []
    private var finished = false

    init(upstreamPort: Int, state: NIOLockedValueBox<FaultProxy.State>) {
        self.upstreamPort = upstreamPort
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !finished else { return }
        guard let fault else {
            buffered.writeBuffer(&bytes)
            guard let headEnd = Self.headEnd(buffered) else { return }
            var head = String(buffer: buffered.getSlice(at: buffered.readerIndex, length: headEnd)!)
            bodyLength = Self.contentLength(head)
            let chosen = state.withLockedValue { state -> FaultProxy.Fault in
                state.requests += 1
                if state.faults.isEmpty { return .pass }
                state.injected += 1
                return state.faults.removeFirst()
            }
            self.fault = chosen
            buffered.moveReaderIndex(forwardBy: headEnd)
            var body = buffered
            buffered = ByteBuffer()
            switch chosen {
            case .drop:
                finish(context)
            case .pass, .dropMidBody, .dropResponse:
                head = Self.forceClose(head)
                connectUpstream(context: context, head: ByteBuffer(string: head))
                forwardBody(context: context, &body)
            case .status, .stall:
                consumeBody(context: context, &body)
            }
            return
        }
        switch fault {
        case .pass, .dropMidBody, .dropResponse: forwardBody(context: context, &bytes)
        case .status, .stall: consumeBody(context: context, &bytes)
        case .drop: break
        }
    }

    private func consumeBody(context: ChannelHandlerContext, _ bytes: inout ByteBuffer) {
        bodySeen += bytes.readableBytes
        guard bodySeen >= bodyLength, case let .status(status, code) = fault else { return }
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>\(code)</Code><Message>injected by the test proxy</Message></Error>"
        let response = "HTTP/1.1 \(status) Injected\r\nContent-Type: application/xml\r\nContent-Length: \(xml.utf8.count)\r\nConnection: close\r\n\r\n\(xml)"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).assumeIsolated().whenComplete { _ in
            self.finish(context)
        }
    }

    private func forwardBody(context: ChannelHandlerContext, _ bytes: inout ByteBuffer) {
        if fault == .dropMidBody {
            let allowed = max(0, bodyLength / 2 - bodySeen)
            if bytes.readableBytes >= allowed, let slice = bytes.readSlice(length: allowed) {
                bodySeen += allowed
                sendUpstream(slice)
                // Let the partial body reach the server before cutting both sides.
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(50)) {
                    self.upstream?.close(promise: nil)
                    self.finish(context)
                }
                finished = true
                return
            }
        }
        bodySeen += bytes.readableBytes
        if bytes.readableBytes > 0 { sendUpstream(bytes) }
    }

    private func sendUpstream(_ bytes: ByteBuffer) {
        if let upstream {
            upstream.writeAndFlush(bytes, promise: nil)
        } else {
            pendingToUpstream.append(bytes)
        }
    }

    private func connectUpstream(context: ChannelHandlerContext, head: ByteBuffer) {
        pendingToUpstream.append(head)
        let front = context.channel
        let withholdResponse = fault == .dropResponse
        ClientBootstrap(group: context.eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(BackHandler(front: front, withholdResponse: withholdResponse))
                }
            }
            .connect(host: "127.0.0.1", port: upstreamPort)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case let .success(channel):
                    if self.finished && self.fault != .dropMidBody {
                        channel.close(promise: nil)
                        return
                    }
                    self.upstream = channel
                    for bytes in self.pendingToUpstream { channel.write(bytes, promise: nil) }
                    channel.flush()
                    self.pendingToUpstream = []
                    if self.finished {
                        // The cut already happened on the client side; cut the server side once the partial body is out.
                        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(50)) { channel.close(promise: nil) }
                    }
                case .failure:
                    self.finish(context)
                }
            }
    }

    private func finish(_ context: ChannelHandlerContext) {
        finished = true
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finished = true
        if fault != .dropMidBody { upstream?.close(promise: nil) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    static func headEnd(_ buffer: ByteBuffer) -> Int? {
        let view = buffer.readableBytesView
        guard view.count >= 4 else { return nil }
        var index = view.startIndex
        while index + 3 < view.endIndex {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 {
                return index - view.startIndex + 4
            }
            index += 1
        }
        return nil
    }

    static func contentLength(_ head: String) -> Int {
        for line in head.split(separator: "\r\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length" {
                return Int(parts[1].trimmingPrefix(" ")) ?? 0
            }
        }
        return 0
    }

    static func forceClose(_ head: String) -> String {
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: true)
            .filter { !$0.lowercased().hasPrefix("connection:") }
        return lines.joined(separator: "\r\n") + "\r\nConnection: close\r\n\r\n"
    }
}

/// Relays the server's answer to the client, or withholds it and cuts the client off.
private final class BackHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let front: any Channel
    private let withholdResponse: Bool

    init(front: any Channel, withholdResponse: Bool) {
        self.front = front
        self.withholdResponse = withholdResponse
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if withholdResponse {
            front.close(promise: nil)
            context.close(promise: nil)
            return
        }
        front.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        front.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
