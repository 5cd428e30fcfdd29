import Logging
import NIOCore

// Somewhat over 400 lines on purpose: the request queue, the accepting task and the ordered response
// writer share loop-confined state whose ordering rules (described below) are easiest to check in one place.

/// One accepted connection of a `KafkaServer`, as the last handler of its channel pipeline.
///
/// Request headers are parsed on the event loop as frames arrive. A request the handler can take on the loop
/// (`KafkaRequestHandler.acceptOnLoop`) is accepted there without a task; otherwise `accept` runs in one
/// task at a time, strictly in arrival order. Completions run concurrently in tasks of their own (or, when
/// no request is waiting, in the accepting task itself, which saves a task per request at light load), or
/// arrive as futures. Responses are written from the event loop in request order, as soon as the oldest
/// one is known.
///
/// Every mutable property is confined to the channel's event loop: tasks come back to it through `onLoop`,
/// which runs inline when the task already executes there (the services run their tasks on the loops).
final class KafkaServerConnection<Handler: KafkaRequestHandler>: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Slot {
        var correlationId: Int32
        /// Nil while the completion is still running.
        var action: KafkaResponseAction?
    }

    private enum Phase {
        case open
        /// Input closed by shutdown: no new requests, accepted ones are answered.
        case draining
        /// Closing after the last write; nothing more is written.
        case closing
        case closed
    }

    /// What the accepting task does after `accept` returned.
    private enum AcceptStep {
        case stop
        case next(KafkaRequestFrame)
        /// The accepting role is handed back; the task runs this completion for the slot with this sequence number.
        case complete(UInt64, @Sendable () async -> KafkaResponseAction)
    }

    let info: ConnectionInfo
    let eventLoop: any EventLoop
    private let handler: Handler
    private let resolver: KafkaHeaderVersionResolver
    private let maxInFlight: Int
    private let logger: Logger
    private let ended = AsyncResult<Void>()

    // Confined to `eventLoop`.
    private var context: ChannelHandlerContext?
    private var phase = Phase.open
    /// Parsed requests waiting for `accept`.
    private var backlog = CircularBuffer<KafkaRequestFrame>()
    /// A task is inside `accept` (or about to call it).
    private var accepting = false
    /// Accepted requests whose responses are not written yet, oldest first.
    private var slots = CircularBuffer<Slot>()
    /// Sequence number of `slots.first`.
    private var firstSlot: UInt64 = 0
    private var tasks: [UInt64: Task<Void, Never>] = [:]
    private var nextTaskID: UInt64 = 0
    /// A read was held back at the in-flight limit.
    private var readHeld = false
    private var hookCalled = false
    /// `stopReading` was called: the end of input is our own shutdown (drain), not the peer leaving (close).
    private var stopRequested = false
    /// Requests are being taken from the backlog on the loop (`acceptOnLoop`); nested calls leave it to that.
    private var admittingOnLoop = false

    init(
        info: ConnectionInfo, eventLoop: any EventLoop, handler: Handler, resolver: @escaping KafkaHeaderVersionResolver,
        maxInFlight: Int, logger: Logger
    ) {
        self.info = info
        self.eventLoop = eventLoop
        self.handler = handler
        self.resolver = resolver
        self.maxInFlight = max(1, maxInFlight)
        self.logger = logger
    }

    /// Returns once the connection has closed, every task of its requests has returned and the handler has
    /// heard of the close.
    func finished() async {
        _ = try? await ended.get()
    }

    /// Stops reading requests (server shutdown) by half-closing the input; accepted requests are still answered.
    func stopReading() {
        eventLoop.execute { self.stopReadingOnLoop() }
    }

    /// Closes the connection now; requests still running are cancelled.
    func close() {
        eventLoop.execute {
            guard let context = self.context else { return }
            self.closeNow(context)
        }
    }

    private func stopReadingOnLoop() {
        guard let context, phase == .open, !stopRequested else { return }
        stopRequested = true
        // Before the channel is active its input cannot be shut down yet; `channelActive` does it then.
        if context.channel.isActive { context.close(mode: .input, promise: nil) }
    }

    // MARK: Pipeline events (on the event loop)

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if stopRequested { context.close(mode: .input, promise: nil) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionEnded()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard phase == .open else { return }
        let request: KafkaRequestFrame
        do {
            request = try KafkaHeaders.parseRequest(frame: unwrapInboundIn(data), resolver: resolver)
        } catch let KafkaTransportError.unsupportedVersion(apiKey, apiVersion) {
            // The body layout is unknown, so the stream cannot be resynchronised: Kafka closes too.
            logger.warning(
                "closing connection: unsupported api key or version",
                metadata: [
                    "kafka.api_key": "\(apiKey)", "kafka.api_version": "\(apiVersion)",
                    "error": "\(KafkaTransportError.unsupportedVersion(apiKey: apiKey, apiVersion: apiVersion))",
                ]
            )
            closeNow(context)
            return
        } catch {
            logger.warning("closing connection: malformed request header", metadata: ["error": "\(error)"])
            closeNow(context)
            return
        }
        backlog.append(request)
        startAcceptingIfIdle()
    }

    func read(context: ChannelHandlerContext) {
        if phase == .open, backlog.count + admitted >= maxInFlight {
            readHeld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            guard phase == .open else { return }
            // A partial frame, if any, was dropped by the decoder: nobody is left to answer it.
            if stopRequested && context.channel.isActive {
                // Requests already read are still accepted and answered.
                phase = .draining
                closeIfDrained(context)
            } else {
                closeNow(context)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case let KafkaTransportError.frameTooLarge(size, limit) = error {
            logger.warning(
                "closing connection: frame size outside limit",
                metadata: ["frame.size": "\(size)", "frame.limit": "\(limit)"]
            )
        } else {
            logger.debug("connection failed", metadata: ["error": "\(error)"])
        }
        closeNow(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionEnded()
        context.fireChannelInactive()
    }

    // MARK: Accepting

    /// Accepted requests are still answered (open, or draining after shutdown).
    private var isAnswering: Bool { phase == .open || phase == .draining }

    /// Requests admitted to the handler whose responses are not written yet.
    private var admitted: Int { slots.count + (accepting ? 1 : 0) }

    private func startAcceptingIfIdle() {
        guard !admittingOnLoop, !accepting else { return }
        let (declined, ready) = admitWaitingOnLoop(below: maxInFlight)
        if let declined {
            accepting = true
            spawn { connection in await connection.acceptLoop(first: declined) }
        }
        if ready { writeReady() }
    }

    /// Takes waiting requests the handler accepts on the loop while fewer than `limit` are admitted;
    /// returns the first one it declines (out of the backlog, for `accept`) and whether an answer is ready.
    private func admitWaitingOnLoop(below limit: Int) -> (declined: KafkaRequestFrame?, ready: Bool) {
        let nested = admittingOnLoop
        admittingOnLoop = true
        defer { admittingOnLoop = nested }
        var ready = false
        while isAnswering, admitted < limit, let request = backlog.popFirst() {
            guard let pending = handler.acceptOnLoop(request, connection: info) else { return (request, ready) }
            if admit(correlationId: request.correlationId, pending) { ready = true }
        }
        return (nil, ready)
    }

    /// Queues the response slot of a request accepted on the loop; true when its answer is already known.
    private func admit(correlationId: Int32, _ pending: KafkaPendingResponse) -> Bool {
        let sequence = firstSlot + UInt64(slots.count)
        switch pending.storage {
        case let .ready(action):
            slots.append(Slot(correlationId: correlationId, action: action))
            return true
        case let .later(complete):
            slots.append(Slot(correlationId: correlationId, action: nil))
            spawn { connection in await connection.run(complete, for: sequence) }
        case let .future(future):
            slots.append(Slot(correlationId: correlationId, action: nil))
            fulfillWhenDone(future, for: sequence)
        }
        return false
    }

    /// Fulfils slot `sequence` when `future` completes. The answer is written at once, but taking further
    /// requests waits for the next loop turn: the future may complete inside the handler's own code.
    private func fulfillWhenDone(_ future: EventLoopFuture<KafkaResponseAction>, for sequence: UInt64) {
        future.hop(to: eventLoop).whenComplete { result in
            let action: KafkaResponseAction
            switch result {
            case let .success(value): action = value
            case let .failure(error): action = .close(reason: "request failed: \(error)")
            }
            let nested = self.admittingOnLoop
            self.admittingOnLoop = true
            self.fulfill(sequence, action)
            self.admittingOnLoop = nested
            if !nested, !self.backlog.isEmpty, !self.accepting {
                self.eventLoop.execute { self.startAcceptingIfIdle() }
            }
        }
    }

    private func acceptLoop(first: KafkaRequestFrame) async {
        var request = first
        while true {
            let pending = await handler.accept(request, connection: info)
            let correlationId = request.correlationId
            let step = await onLoopValue(orElse: AcceptStep.stop) { $0.accepted(correlationId: correlationId, pending) }
            switch step {
            case .stop:
                return
            case let .next(following):
                request = following
            case let .complete(sequence, complete):
                await run(complete, for: sequence)
                return
            }
        }
    }

    private func accepted(correlationId: Int32, _ pending: KafkaPendingResponse) -> AcceptStep {
        guard isAnswering else {
            accepting = false
            return .stop
        }
        let sequence = firstSlot + UInt64(slots.count)
        var completion: (@Sendable () async -> KafkaResponseAction)?
        if case let .later(complete) = pending.storage {
            // Run by this task when nothing else waits (below), so it is not spawned here.
            slots.append(Slot(correlationId: correlationId, action: nil))
            completion = complete
        } else {
            _ = admit(correlationId: correlationId, pending)
        }
        // Waiting requests the handler takes on the loop need no task; the first it does not goes on in this
        // one. `admitted` still counts this task's accepting role, hence the limit one above.
        let (next, _) = admitWaitingOnLoop(below: maxInFlight + 1)
        accepting = next != nil
        if let completion {
            guard next != nil else { return .complete(sequence, completion) }
            spawn { connection in await connection.run(completion, for: sequence) }
        }
        writeReady()
        return next.map(AcceptStep.next) ?? .stop
    }

    private func run(_ completion: @Sendable () async -> KafkaResponseAction, for sequence: UInt64) async {
        let action = await completion()
        onLoop { $0.fulfill(sequence, action) }
    }

    private func fulfill(_ sequence: UInt64, _ action: KafkaResponseAction) {
        guard sequence >= firstSlot, isAnswering else { return }
        let index = Int(sequence - firstSlot)
        guard index < slots.count else { return }
        slots[offset: index].action = action
        if index == 0 { writeReady() }
    }

    // MARK: Writing

    /// Writes every response at the head whose action is known, with one flush.
    private func writeReady() {
        guard let context, isAnswering else { return }
        var wrote = false
        while let head = slots.first, let action = head.action {
            slots.removeFirst()
            firstSlot += 1
            switch action {
            case let .respond(body, headerVersion):
                let prefix = KafkaHeaders.responsePrefix(
                    correlationId: head.correlationId, headerVersion: headerVersion, bodySize: body.readableBytes
                )
                context.write(wrapOutboundOut(prefix), promise: nil)
                context.write(wrapOutboundOut(body), promise: nil)
                wrote = true
            case .noResponse:
                break
            case let .close(reason):
                logger.info("closing connection at handler's request", metadata: ["reason": "\(reason)"])
                closeAfterWrites(context)
                return
            }
        }
        if wrote { context.flush() }
        // A failed write may have closed the channel from inside flush.
        guard isAnswering else { return }
        startAcceptingIfIdle()
        if phase == .draining {
            closeIfDrained(context)
            return
        }
        if readHeld, backlog.count + admitted < maxInFlight {
            readHeld = false
            context.read()
        }
    }

    private func closeIfDrained(_ context: ChannelHandlerContext) {
        if slots.isEmpty, backlog.isEmpty, !accepting { closeAfterWrites(context) }
    }

    /// Closes once everything written so far has reached the socket: a close with writes still pending in
    /// NIO would discard them, truncating responses the client was promised.
    private func closeAfterWrites(_ context: ChannelHandlerContext) {
        guard isAnswering else { return }
        phase = .closing
        backlog.removeAll()
        let channel = context.channel
        // Written after everything before it, so it completes only once they are on the wire (or failed).
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
    }

    private func closeNow(_ context: ChannelHandlerContext) {
        guard phase != .closed else { return }
        phase = .closing
        backlog.removeAll()
        context.close(promise: nil)
    }

    // MARK: Tasks and the end of the connection

    private func spawn(_ body: @escaping @Sendable (KafkaServerConnection) async -> Void) {
        let id = nextTaskID
        nextTaskID &+= 1
        tasks[id] = Task { [self] in
            await body(self)
            onLoop { $0.taskEnded(id) }
        }
    }

    private func taskEnded(_ id: UInt64) {
        tasks.removeValue(forKey: id)
        callHookIfDone()
    }

    /// Runs `body` on the event loop: inline when already there, else queued.
    private func onLoop(_ body: @escaping @Sendable (KafkaServerConnection) -> Void) {
        if eventLoop.inEventLoop {
            body(self)
        } else {
            eventLoop.execute { body(self) }
        }
    }

    /// Like `onLoop`, returning the body's value; `fallback` if the loop no longer runs anything.
    private func onLoopValue<Value: Sendable>(
        orElse fallback: Value, _ body: @escaping @Sendable (KafkaServerConnection) -> Value
    ) async -> Value {
        if eventLoop.inEventLoop { return body(self) }
        return (try? await eventLoop.submit { body(self) }.get()) ?? fallback
    }

    private func connectionEnded() {
        guard phase != .closed else { return }
        phase = .closed
        backlog.removeAll()
        slots.removeAll()
        accepting = false
        for task in tasks.values { task.cancel() }
        callHookIfDone()
    }

    private func callHookIfDone() {
        guard phase == .closed, tasks.isEmpty, !hookCalled else { return }
        hookCalled = true
        let handler = handler
        let info = info
        let ended = ended
        Task {
            await handler.connectionClosed(info)
            ended.set(.success(()))
        }
    }
}
