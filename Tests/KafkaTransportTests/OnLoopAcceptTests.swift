import NIOCore
import NIOPosix
import Synchronization
import TestKit
import Testing

@testable import KafkaTransport

/// Takes requests on the event loop (`acceptOnLoop`) by the body's first word: `loop …` is answered through a
/// promise the test completes (`release`), `ready …` at once, `fail …` by a failed future, and `chain …`
/// answers at once after completing the previous `loop` request's promise from inside the call. Anything
/// else goes to `accept`, which answers at once.
final class OnLoopHandler: KafkaRequestHandler {
    struct Accepted: Sendable, Equatable {
        var correlationId: Int32
        var onLoop: Bool
    }

    private struct State {
        var accepted: [Accepted] = []
        var completed = 0
        var inAccept = false
        var promises: [Int32: (EventLoopPromise<KafkaResponseAction>, ByteBuffer)] = [:]
        var lastLoop: Int32?
        var violations: [String] = []
    }

    let inFlightLimit: Int
    private let state = Mutex(State())
    private let events: AsyncStream<Int32>
    private let input: AsyncStream<Int32>.Continuation

    init(inFlightLimit: Int = .max) {
        self.inFlightLimit = inFlightLimit
        (events, input) = AsyncStream.makeStream()
    }

    var accepted: [Accepted] { state.withLock { $0.accepted } }
    var violations: [String] { state.withLock { $0.violations } }

    /// Waits until `count` more requests have been accepted (by either path); their correlation ids.
    func nextAccepted(_ count: Int) async -> [Int32] {
        await events.next(count)
    }

    /// Answers the `loop` request with this correlation id with its own body.
    func release(_ correlationId: Int32) {
        let entry = state.withLock { state in
            let entry = state.promises.removeValue(forKey: correlationId)
            if entry != nil { state.completed += 1 }
            return entry
        }
        entry.map { promise, body in promise.succeed(.respond(body: body, headerVersion: 1)) }
    }

    private func admit(_ request: KafkaRequestFrame, onLoop: Bool, completesAtOnce: Bool) {
        state.withLock { state in
            let inFlight = state.accepted.count - state.completed
            if inFlight >= inFlightLimit {
                state.violations.append("accepted with \(inFlight) already in flight (limit \(inFlightLimit))")
            }
            if state.inAccept { state.violations.append("request \(request.correlationId) taken while accept ran") }
            state.accepted.append(Accepted(correlationId: request.correlationId, onLoop: onLoop))
            if completesAtOnce { state.completed += 1 }
        }
        input.yield(request.correlationId)
    }

    func acceptOnLoop(_ request: KafkaRequestFrame, connection: ConnectionInfo) -> KafkaPendingResponse? {
        let command = String(buffer: request.body).split(separator: " ").first.map(String.init) ?? ""
        guard ["loop", "ready", "fail", "chain"].contains(command) else { return nil }
        guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
            state.withLock { $0.violations.append("acceptOnLoop called off the event loop") }
            return nil
        }
        switch command {
        case "loop":
            // Stored before the request is announced, so the test can release it as soon as it hears of it.
            let promise = loop.makePromise(of: KafkaResponseAction.self)
            state.withLock { state in
                state.promises[request.correlationId] = (promise, request.body)
                state.lastLoop = request.correlationId
            }
            admit(request, onLoop: true, completesAtOnce: false)
            return KafkaPendingResponse(future: promise.futureResult)
        case "chain":
            admit(request, onLoop: true, completesAtOnce: true)
            if let previous = state.withLock({ $0.lastLoop }) { release(previous) }
            return KafkaPendingResponse(future: loop.makeSucceededFuture(.respond(body: request.body, headerVersion: 1)))
        case "fail":
            admit(request, onLoop: true, completesAtOnce: true)
            return KafkaPendingResponse(future: loop.makeFailedFuture(KafkaTransportError.connectionClosed))
        default:
            admit(request, onLoop: true, completesAtOnce: true)
            return .immediate(.respond(body: request.body, headerVersion: 1))
        }
    }

    func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        admit(request, onLoop: false, completesAtOnce: true)
        state.withLock { $0.inAccept = true }
        // A turn of the executor inside accept: an on-loop accept slipping in now would be recorded.
        await Task.yield()
        state.withLock { $0.inAccept = false }
        return .immediate(.respond(body: request.body, headerVersion: 1))
    }
}

private func send(_ connection: KafkaConnection, _ text: String) async throws -> String {
    let body = try await connection.send(
        apiKey: 1, apiVersion: 12, headerVersion: 2, responseHeaderVersion: 1, clientId: "test",
        body: ByteBuffer(string: text), timeout: .seconds(20))
    return String(buffer: body)
}

@Suite(.timeLimit(.minutes(1))) struct OnLoopAcceptTests {
    @Test func requestsTakenOnTheLoopAndInTasksKeepArrivalOrderAndAnswerInRequestOrder() async throws {
        let handler = OnLoopHandler()
        let capture = LogCapture()
        let count = 300
        let commands = ["loop", "task", "ready"]
        try await withServer(handler: handler, logger: capture.logger(), configure: { $0.maxInFlightPerConnection = 1024 }) { _, port in
            let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<count {
                    group.addTask { (index, try await send(connection, "\(commands[index % 3]) \(index)")) }
                }
                let ids = try await withTimeout(.seconds(30), "accepting every request") { await handler.nextAccepted(count) }
                #expect(ids == ids.sorted(), "requests must be accepted in arrival order")
                // The promised answers complete newest first; responses still leave in request order.
                let promised = handler.accepted.filter(\.onLoop).map(\.correlationId)
                for id in promised.reversed() { handler.release(id) }
                var answered = 0
                for try await (index, reply) in group {
                    #expect(reply == "\(commands[index % 3]) \(index)")
                    answered += 1
                }
                #expect(answered == count)
            }
            await connection.close()
        }
        let accepted = handler.accepted
        #expect(accepted.count == count)
        #expect(accepted.filter { !$0.onLoop }.count == count / 3, "only `task` requests go to accept")
        #expect(handler.violations.isEmpty)
        #expect(capture.lines(atLeast: .warning).isEmpty)
    }

    @Test func aFailedFutureClosesTheConnectionAfterTheAnswersBeforeIt() async throws {
        let handler = OnLoopHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
            #expect(try await send(connection, "ready first") == "ready first")
            let pending = Task { try await send(connection, "loop second") }
            let ids = await handler.nextAccepted(2)
            let failing = Task { try await send(connection, "fail third") }
            _ = await handler.nextAccepted(1)
            handler.release(ids[1])
            #expect(try await pending.value == "loop second", "an answer queued before the failure is still written")
            await #expect(throws: KafkaTransportError.connectionClosed) { try await failing.value }
            #expect(!connection.isActive)
        }
        #expect(handler.violations.isEmpty)
    }

    @Test func aFutureCompletedInsideALaterAcceptStillAnswersInOrder() async throws {
        let handler = OnLoopHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
            for round in 0..<20 {
                let first = Task { try await send(connection, "loop \(round)") }
                _ = await handler.nextAccepted(1)
                // `chain` completes the waiting promise from inside acceptOnLoop, then answers itself.
                #expect(try await send(connection, "chain \(round)") == "chain \(round)")
                #expect(try await first.value == "loop \(round)")
                #expect(await handler.nextAccepted(1).count == 1, "the chain request was accepted")
            }
            await connection.close()
        }
        #expect(handler.violations.isEmpty)
    }

    @Test func theInFlightLimitHoldsWhenFuturesCompleteFromOtherThreads() async throws {
        let limit = 3
        let handler = OnLoopHandler(inFlightLimit: limit)
        try await withServer(handler: handler, logger: LogCapture().logger(), configure: { $0.maxInFlightPerConnection = limit }) { _, port in
            let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<60 {
                    let command = index % 4 == 3 ? "task" : (index % 4 == 2 ? "ready" : "loop")
                    group.addTask { (index, try await send(connection, "\(command) \(index)")) }
                }
                try await withTimeout(.seconds(30), "draining") {
                    // Each `loop` request is answered from this task's thread as soon as it is accepted.
                    var seen = 0
                    while seen < 60, !Task.isCancelled {
                        for id in await handler.nextAccepted(1) {
                            seen += 1
                            handler.release(id)
                        }
                    }
                }
                var answered = 0
                for try await (index, reply) in group {
                    #expect(reply.hasSuffix(" \(index)"))
                    answered += 1
                }
                #expect(answered == 60)
            }
            await connection.close()
        }
        #expect(handler.accepted.count == 60)
        #expect(handler.violations.isEmpty)
    }
}
