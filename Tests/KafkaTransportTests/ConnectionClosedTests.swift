import Logging
import NIOCore
import Synchronization
import TestKit
import Testing

@testable import KafkaTransport

/// Records the order of accepts, completions and connection ends; each request's completion waits until cancelled.
private final class ClosingHandler: KafkaRequestHandler {
    private let log = Mutex<[String]>([])
    private let events: AsyncStream<String>
    private let input: AsyncStream<String>.Continuation

    init() {
        (events, input) = AsyncStream.makeStream()
    }

    var entries: [String] { log.withLock { $0 } }

    private func note(_ entry: String) {
        log.withLock { $0.append(entry) }
        input.yield(entry)
    }

    /// Waits for the next entry that starts with `prefix` (single waiter at a time).
    func next(_ prefix: String) async -> String? {
        for await entry in events where entry.hasPrefix(prefix) { return entry }
        return nil
    }

    func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        note("accepted \(connection.id)")
        return KafkaPendingResponse {
            // Parked until the connection's close cancels it: the sleep is the request's work, not a wait for an event.
            try? await Task.sleep(for: .seconds(60))
            self.note("completed \(connection.id)")
            return .noResponse
        }
    }

    func connectionClosed(_ connection: ConnectionInfo) async {
        note("closed \(connection.id)")
    }
}

/// A handler without `connectionClosed` still conforms (the default does nothing).
private struct PlainHandler: KafkaRequestHandler {
    func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        .immediate(.noResponse)
    }
}

@Suite(.timeLimit(.minutes(1))) struct ConnectionClosedTests {
    @Test func theHandlerHearsOfAClosedConnectionOnceAfterItsRequestsFinished() async throws {
        let handler = ClosingHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let first = try await KafkaConnection.connect(host: "127.0.0.1", port: port, configuration: .init())
            let second = try await KafkaConnection.connect(host: "127.0.0.1", port: port, configuration: .init())
            try await first.sendOneway(apiKey: 1, apiVersion: 12, headerVersion: 2, clientId: "a", body: ByteBuffer(string: "x"))
            let accepted = try await withTimeout(.seconds(10), "accept") { await handler.next("accepted") }
            try await second.sendOneway(apiKey: 1, apiVersion: 12, headerVersion: 2, clientId: "b", body: ByteBuffer(string: "y"))
            let acceptedSecond = try await withTimeout(.seconds(10), "accept") { await handler.next("accepted") }
            #expect(accepted != acceptedSecond)
            let firstID = try #require(accepted?.split(separator: " ").last.map(String.init))

            await first.close()
            let closed = try await withTimeout(.seconds(10), "connectionClosed") { await handler.next("closed") }
            #expect(closed == "closed \(firstID)")
            // The still-running completion was cancelled and returned before the handler heard of the close.
            let entries = handler.entries
            #expect(entries.filter { $0.hasSuffix(" \(firstID)") } == ["accepted \(firstID)", "completed \(firstID)", "closed \(firstID)"], "\(entries)")
            #expect(!entries.contains { $0.hasPrefix("closed") && $0 != "closed \(firstID)" }, "only the closed connection: \(entries)")
            await second.close()
            _ = try await withTimeout(.seconds(10), "second connectionClosed") { await handler.next("closed") }
        }
        #expect(handler.entries.filter { $0.hasPrefix("closed") }.count == 2)
    }

    @Test func handlersWithoutTheHookStillServe() async throws {
        try await withServer(handler: PlainHandler(), logger: LogCapture().logger()) { _, port in
            let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port, configuration: .init())
            try await connection.sendOneway(apiKey: 1, apiVersion: 12, headerVersion: 2, clientId: "a", body: ByteBuffer(string: "x"))
            await connection.close()
        }
    }
}
