import NIOCore
import Synchronization

@testable import KafkaTransport

/// A request handler whose behaviour is chosen by the request body's first word:
/// `echo …` answers with the body (after the test releases it when `gated`), `noresp` gives `.noResponse`,
/// `close` gives `.close`, `big N` answers with N bytes, `hang` never answers until cancelled.
final class ScriptedHandler: KafkaRequestHandler {
    struct Record: Sendable {
        var request: KafkaRequestFrame
        var connection: ConnectionInfo
    }

    private struct State {
        var records: [Record] = []
        var gates: [Int32: OneShot<Void>] = [:]
        var completed = 0
        var completionOrder: [Int32] = []
        var violations: [String] = []
    }

    let gated: Bool
    let inFlightLimit: Int
    private let state = Mutex(State())
    private let acceptedEvents: AsyncStream<Int32>
    private let acceptedInput: AsyncStream<Int32>.Continuation
    private let completedEvents: AsyncStream<Int32>
    private let completedInput: AsyncStream<Int32>.Continuation

    init(gated: Bool = false, inFlightLimit: Int = .max) {
        self.gated = gated
        self.inFlightLimit = inFlightLimit
        (acceptedEvents, acceptedInput) = AsyncStream.makeStream()
        (completedEvents, completedInput) = AsyncStream.makeStream()
    }

    var records: [Record] { state.withLock { $0.records } }
    var completionOrder: [Int32] { state.withLock { $0.completionOrder } }
    var violations: [String] { state.withLock { $0.violations } }

    /// Waits until `count` more requests have been accepted and returns their correlation ids (single waiter at a time).
    func nextAccepted(_ count: Int) async -> [Int32] {
        await acceptedEvents.next(count)
    }

    /// Waits for the next completion of a request and returns its correlation id (single waiter at a time).
    func nextCompleted() async -> Int32? {
        for await id in completedEvents { return id }
        return nil
    }

    /// Lets the gated request with this correlation id answer.
    func release(_ correlationId: Int32) {
        let gate = state.withLock { $0.gates[correlationId] }
        gate?.fulfill(())
    }

    func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        let gate = OneShot<Void>()
        state.withLock { state in
            let inFlight = state.records.count - state.completed
            if inFlight >= inFlightLimit {
                state.violations.append("accepted with \(inFlight) already in flight (limit \(inFlightLimit))")
            }
            state.records.append(Record(request: request, connection: connection))
            state.gates[request.correlationId] = gate
        }
        acceptedInput.yield(request.correlationId)
        let command = String(buffer: request.body).split(separator: " ").first.map(String.init) ?? ""
        let responseHeader: Int16 = request.apiKey == 18 ? 0 : (request.headerVersion >= 2 ? 1 : 0)
        let gated = gated
        let correlationId = request.correlationId
        switch command {
        case "noresp":
            complete(correlationId)
            return .immediate(.noResponse)
        case "close":
            complete(correlationId)
            return .immediate(.close(reason: "asked by test"))
        case "big":
            let size = String(buffer: request.body).split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            complete(correlationId)
            return .immediate(.respond(body: ByteBuffer(repeating: 0x62, count: size), headerVersion: responseHeader))
        case "hang":
            return KafkaPendingResponse {
                _ = await OneShot<Void>().value()
                return .noResponse
            }
        default:
            return KafkaPendingResponse {
                if gated { _ = await gate.value() }
                self.complete(correlationId)
                return .respond(body: request.body, headerVersion: responseHeader)
            }
        }
    }

    private func complete(_ correlationId: Int32) {
        state.withLock { state in
            state.completed += 1
            state.completionOrder.append(correlationId)
        }
        completedInput.yield(correlationId)
    }
}
