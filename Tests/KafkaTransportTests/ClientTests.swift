import KafkaProtocol
import Logging
import NIOCore
import TestKit
import Testing

@testable import KafkaTransport

private func clientEcho(
    _ client: KafkaClient, _ port: Int, _ text: String, timeout: Duration = .seconds(20)
) async throws -> String {
    let body = try await client.send(
        to: KafkaEndpoint(host: "127.0.0.1", port: port), apiKey: 1, apiVersion: 12, headerVersion: 2,
        responseHeaderVersion: 1, clientId: "client-test", body: ByteBuffer(string: text), timeout: timeout
    )
    return String(buffer: body)
}

@Suite(.timeLimit(.minutes(1))) struct ClientTests {
    @Test func timeoutFailsTheCallerInTimeThenTheClientReconnects() async throws {
        let handler = ScriptedHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let client = KafkaClient(logger: LogCapture().logger())
            #expect(try await clientEcho(client, port, "echo warm-up") == "echo warm-up")
            _ = await handler.nextAccepted(1)
            let clock = ContinuousClock()
            let start = clock.now
            // Long enough that the request behind it is surely sent on the same connection before it fires,
            // even on a loaded machine.
            let stuck = Task { try await clientEcho(client, port, "hang", timeout: .seconds(2)) }
            _ = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            let behind = Task { try await clientEcho(client, port, "echo behind") }
            _ = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            await #expect(throws: KafkaTransportError.timedOut) { _ = try await stuck.value }
            let elapsed = clock.now - start
            #expect(elapsed >= .seconds(2))
            #expect(elapsed < .seconds(20))
            // Pipelined behind the stuck request, so it cannot be answered on that connection either.
            await #expect(throws: KafkaTransportError.connectionClosed) { _ = try await behind.value }
            #expect(try await clientEcho(client, port, "echo after") == "echo after")
            await client.closeAll()
        }
        let connections = handler.records.map(\.connection.id)
        #expect(connections.first != connections.last)
        #expect(handler.records.map { String(buffer: $0.request.body) }.last == "echo after")
    }

    @Test func serverClosingMidPipelineFailsCallersThenTheClientReconnects() async throws {
        let handler = ScriptedHandler(gated: true)
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let client = KafkaClient(logger: LogCapture().logger())
            let first = Task { try await clientEcho(client, port, "echo first") }
            let firstID = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            let closing = Task { try await clientEcho(client, port, "close") }
            _ = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            let third = Task { try await clientEcho(client, port, "echo third") }
            _ = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            handler.release(firstID[0])
            #expect(try await first.value == "echo first")
            await #expect(throws: KafkaTransportError.connectionClosed) { _ = try await closing.value }
            await #expect(throws: KafkaTransportError.connectionClosed) { _ = try await third.value }

            let again = Task { try await clientEcho(client, port, "echo again") }
            let againID = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            handler.release(againID[0])
            #expect(try await again.value == "echo again")
            await client.closeAll()
        }
        #expect(Set(handler.records.map(\.connection.id)).count == 2)
    }

    @Test func serverShutdownPastItsGracePeriodFailsInFlightCallers() async throws {
        let handler = ScriptedHandler()
        let configuration = KafkaServerConfiguration(
            port: 0, headerVersionResolver: testResolver, shutdownGracePeriod: .milliseconds(100)
        )
        let server = KafkaServer(configuration: configuration, handler: handler, logger: LogCapture().logger())
        let running = Task { try await server.run() }
        let port = try await withTimeout(.seconds(10)) { try await server.boundPort() }
        let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
        let stuck = Task {
            try await connection.send(
                apiKey: 1, apiVersion: 3, headerVersion: 1, responseHeaderVersion: 0, clientId: nil,
                body: ByteBuffer(string: "hang"), timeout: .seconds(30)
            )
        }
        _ = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
        running.cancel()
        await #expect(throws: KafkaTransportError.connectionClosed) { _ = try await stuck.value }
        try await withTimeout(.seconds(10)) { try await running.value }
        await #expect(throws: KafkaTransportError.self) {
            _ = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
        }
    }

    @Test func cancelledCallerDoesNotShiftLaterResponses() async throws {
        let handler = ScriptedHandler(gated: true)
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
            let abandoned = Task {
                try await connection.send(
                    apiKey: 1, apiVersion: 3, headerVersion: 1, responseHeaderVersion: 0, clientId: nil,
                    body: ByteBuffer(string: "echo abandoned"), timeout: .seconds(30)
                )
            }
            let abandonedID = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            abandoned.cancel()
            await #expect(throws: CancellationError.self) { _ = try await abandoned.value }
            handler.release(abandonedID[0])
            let next = Task {
                try await connection.send(
                    apiKey: 1, apiVersion: 3, headerVersion: 1, responseHeaderVersion: 0, clientId: nil,
                    body: ByteBuffer(string: "echo next"), timeout: .seconds(30)
                )
            }
            let nextID = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
            handler.release(nextID[0])
            #expect(String(buffer: try await next.value) == "echo next")
            #expect(connection.isActive)
            await connection.close()
        }
    }

    @Test func oversizedResponseFailsWithFrameTooLarge() async throws {
        try await withServer(handler: ScriptedHandler(), logger: LogCapture().logger()) { _, port in
            let connection = try await KafkaConnection.connect(
                host: "127.0.0.1", port: port, configuration: KafkaClientConfiguration(maxFrameSize: 64)
            )
            await #expect(throws: KafkaTransportError.frameTooLarge(size: 4 + 105, limit: 64)) {
                _ = try await connection.send(
                    apiKey: 1, apiVersion: 3, headerVersion: 1, responseHeaderVersion: 0, clientId: nil,
                    body: ByteBuffer(string: "echo " + String(repeating: "x", count: 100)), timeout: .seconds(20)
                )
            }
            #expect(!connection.isActive)
        }
    }

    @Test func unreachableServerFailsWithConnectionFailed() async throws {
        // Learn a port that is free by binding and releasing it.
        let configuration = KafkaServerConfiguration(port: 0, headerVersionResolver: testResolver)
        let server = KafkaServer(configuration: configuration, handler: ScriptedHandler(), logger: LogCapture().logger())
        let running = Task { try await server.run() }
        let port = try await withTimeout(.seconds(10)) { try await server.boundPort() }
        running.cancel()
        try await withTimeout(.seconds(10)) { try await running.value }

        let client = KafkaClient(logger: LogCapture().logger())
        await #expect {
            _ = try await clientEcho(client, port, "echo nobody")
        } throws: { error in
            if case KafkaTransportError.connectionFailed = error { return true }
            return false
        }
    }

    @Test func invalidHeaderVersionsAreRejectedBeforeSending() async throws {
        try await withServer(handler: ScriptedHandler(), logger: LogCapture().logger()) { _, port in
            let connection = try await KafkaConnection.connect(host: "127.0.0.1", port: port)
            await #expect(throws: KafkaTransportError.self) {
                _ = try await connection.send(
                    apiKey: 1, apiVersion: 3, headerVersion: 3, responseHeaderVersion: 0, clientId: nil,
                    body: ByteBuffer(), timeout: .seconds(5)
                )
            }
            #expect(connection.isActive)
            await connection.close()
        }
    }
}
