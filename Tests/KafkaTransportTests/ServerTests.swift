import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import TestKit
import Testing

@testable import KafkaTransport

private func connect(_ port: Int, _ configuration: KafkaClientConfiguration = .init()) async throws -> KafkaConnection {
    try await KafkaConnection.connect(host: "127.0.0.1", port: port, configuration: configuration)
}

private func echo(
    _ connection: KafkaConnection, _ text: String, apiVersion: Int16 = 12, clientId: String? = "test",
    timeout: Duration = .seconds(20)
) async throws -> String {
    let headerVersion: Int16 = apiVersion >= 12 ? 2 : 1
    let body = try await connection.send(
        apiKey: 1, apiVersion: apiVersion, headerVersion: headerVersion, responseHeaderVersion: headerVersion - 1,
        clientId: clientId, body: ByteBuffer(string: text), timeout: timeout
    )
    return String(buffer: body)
}

@Suite(.timeLimit(.minutes(1))) struct ServerTests {
    @Test func pipelinedResponsesComeBackInRequestOrderWhileCompletingInReverse() async throws {
        let handler = ScriptedHandler(gated: true)
        let capture = LogCapture()
        let count = 1000
        try await withServer(handler: handler, logger: capture.logger(), configure: { $0.maxInFlightPerConnection = 1024 }) { _, port in
            let connection = try await connect(port)
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<count {
                    group.addTask { (index, try await echo(connection, "echo \(index)")) }
                }
                let accepted = try await withTimeout(.seconds(30), "accepting all requests") {
                    await handler.nextAccepted(count)
                }
                #expect(accepted == (0..<Int32(count)).map { $0 }, "accept() must see requests in arrival order")
                // Each completion finishes before the next earlier one is released: strictly reverse order.
                try await withTimeout(.seconds(30), "reverse completions") {
                    for id in accepted.reversed() {
                        handler.release(id)
                        let completed = await handler.nextCompleted()
                        #expect(completed == id)
                    }
                }
                var answered = 0
                for try await (index, reply) in group {
                    #expect(reply == "echo \(index)")
                    answered += 1
                }
                #expect(answered == count)
            }
            #expect(handler.completionOrder == (0..<Int32(count)).reversed().map { $0 })
            await connection.close()
        }
        #expect(handler.violations.isEmpty)
        #expect(capture.lines(atLeast: .warning).isEmpty)
    }

    @Test func readingPausesAtTheInFlightLimit() async throws {
        let limit = 4
        let handler = ScriptedHandler(gated: true, inFlightLimit: limit)
        try await withServer(handler: handler, logger: LogCapture().logger(), configure: { $0.maxInFlightPerConnection = limit }) { _, port in
            let connection = try await connect(port)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<40 {
                    group.addTask { _ = try await echo(connection, "echo \(index)") }
                }
                try await withTimeout(.seconds(30), "draining") {
                    // Release each request as it is accepted; the handler records any accept beyond the limit.
                    for _ in 0..<40 {
                        for id in await handler.nextAccepted(1) { handler.release(id) }
                    }
                }
                try await group.waitForAll()
            }
            await connection.close()
        }
        #expect(handler.records.count == 40)
        #expect(handler.violations.isEmpty)
    }

    @Test func noResponseInTheMiddleKeepsLaterResponsesMatched() async throws {
        let handler = ScriptedHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let connection = try await connect(port)
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<300 {
                    if index % 3 == 1 {
                        try await connection.sendOneway(
                            apiKey: 1, apiVersion: 12, headerVersion: 2, clientId: "test", body: ByteBuffer(string: "noresp \(index)")
                        )
                    } else {
                        group.addTask { (index, try await echo(connection, "echo \(index)")) }
                    }
                }
                var answered = 0
                for try await (index, reply) in group {
                    #expect(reply == "echo \(index)")
                    answered += 1
                }
                #expect(answered == 200)
            }
            await connection.close()
        }
        let bodies = handler.records.map { String(buffer: $0.request.body) }
        #expect(bodies.count == 300)
        let firstOneway = try #require(bodies.firstIndex { $0.hasPrefix("noresp") })
        let lastEcho = try #require(bodies.lastIndex { $0.hasPrefix("echo") })
        #expect(firstOneway < lastEcho, "one-way requests must sit between answered ones")
    }

    @Test(arguments: [Int32(2 * 1024 * 1024), Int32(-1), Int32.max])
    func badFrameSizeClosesOnlyThatConnectionWithOneLogLine(size: Int32) async throws {
        let handler = ScriptedHandler()
        let capture = LogCapture()
        try await withServer(handler: handler, logger: capture.logger(), configure: { $0.maxFrameSize = 1024 * 1024 }) { _, port in
            let healthy = try await connect(port)
            #expect(try await echo(healthy, "echo before") == "echo before")
            var bad = ByteBuffer()
            bad.writeKafkaInteger(size)
            bad.writeRepeatingByte(0x41, count: 64)
            let received = try await rawExchange(port: port, chunks: [bad])
            #expect(received.readableBytes == 0)
            #expect(try await echo(healthy, "echo after") == "echo after")
            await healthy.close()
        }
        let warnings = capture.lines(atLeast: .warning)
        #expect(warnings.count == 1)
        let line = try #require(warnings.first)
        #expect(line.metadata["frame.size"] == "\(size)")
        #expect(line.metadata["frame.limit"] == "\(1024 * 1024)")
        #expect(line.metadata["peer"]?.contains("127.0.0.1") == true)
        #expect(handler.records.count == 2)
    }

    @Test func headerVersionsAndClientIdsReachTheHandler() async throws {
        let handler = ScriptedHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let connection = try await connect(port)
            #expect(try await echo(connection, "echo a", apiVersion: 3, clientId: nil) == "echo a")
            #expect(try await echo(connection, "echo b", apiVersion: 3, clientId: "client-b") == "echo b")
            #expect(try await echo(connection, "echo c", apiVersion: 12, clientId: nil) == "echo c")
            #expect(try await echo(connection, "echo d", apiVersion: 12, clientId: "client-d") == "echo d")
            await connection.close()

            // Tagged fields in a v2 header, from a raw peer; "close" then ends the exchange after the answer.
            let tagged = requestFrame(
                apiKey: 1, apiVersion: 12, correlationId: 500, clientId: "raw", headerVersion: 2,
                taggedFields: [(1, [9, 9, 9])], body: ByteBuffer(string: "echo tagged")
            )
            let closing = requestFrame(
                apiKey: 1, apiVersion: 12, correlationId: 501, clientId: "raw", headerVersion: 2,
                body: ByteBuffer(string: "close")
            )
            var received = try await rawExchange(port: port, chunks: [tagged, closing])
            let frame = try #require(try KafkaFrameDecoder.nextFrame(from: &received, maxFrameSize: 1000))
            let (correlationId, body) = try KafkaHeaders.parseResponse(frame: frame, headerVersion: 1)
            #expect(correlationId == 500)
            #expect(String(buffer: body) == "echo tagged")
            #expect(received.readableBytes == 0)
        }
        let requests = handler.records.map(\.request)
        #expect(requests.map(\.clientId) == [nil, "client-b", nil, "client-d", "raw", "raw"])
        #expect(requests.map(\.headerVersion) == [1, 1, 2, 2, 2, 2])
        #expect(requests[4].headerTaggedFields == [UnknownTaggedField(tag: 1, data: ByteBuffer(bytes: [9, 9, 9]))])
        #expect(Set(handler.records.prefix(4).map(\.connection.id)).count == 1)
    }

    @Test func unsupportedApiKeyClosesTheConnectionWithOneLogLine() async throws {
        let handler = ScriptedHandler()
        let capture = LogCapture()
        try await withServer(handler: handler, logger: capture.logger()) { _, port in
            let connection = try await connect(port)
            await #expect(throws: KafkaTransportError.connectionClosed) {
                _ = try await connection.send(
                    apiKey: 99, apiVersion: 0, headerVersion: 1, responseHeaderVersion: 0, clientId: nil,
                    body: ByteBuffer(), timeout: .seconds(20)
                )
            }
            #expect(!connection.isActive)
        }
        #expect(handler.records.isEmpty)
        let warnings = capture.lines(atLeast: .warning)
        #expect(warnings.count == 1)
        #expect(warnings.first?.metadata["kafka.api_key"] == "99")
        #expect(warnings.first?.metadata["peer"]?.contains("127.0.0.1") == true)
    }

    @Test func malformedHeaderClosesTheConnectionWithOneLogLine() async throws {
        let handler = ScriptedHandler()
        let capture = LogCapture()
        try await withServer(handler: handler, logger: capture.logger()) { _, port in
            // A frame of 6 bytes: api key, version, then half a correlation id.
            let received = try await rawExchange(port: port, chunks: [ByteBuffer(bytes: [0, 0, 0, 6, 0, 1, 0, 3, 0, 0])])
            #expect(received.readableBytes == 0)
        }
        #expect(handler.records.isEmpty)
        let warnings = capture.lines(atLeast: .warning)
        #expect(warnings.count == 1)
        #expect(warnings.first?.message.contains("malformed") == true)
    }

    @Test func tooNewApiVersionsIsStillDelivered() async throws {
        let handler = ScriptedHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            let connection = try await connect(port)
            let reply = try await connection.send(
                apiKey: 18, apiVersion: 77, headerVersion: 2, responseHeaderVersion: 0, clientId: "new-client",
                body: ByteBuffer(string: "echo apiversions"), timeout: .seconds(20)
            )
            // The client's empty v2 tagged section is not interpreted: it reaches the handler as the body's first byte.
            #expect(Array(reply.readableBytesView) == [0] + Array("echo apiversions".utf8))
            #expect(connection.isActive)
            await connection.close()
        }
        let request = try #require(handler.records.first?.request)
        #expect(request.apiKey == 18)
        #expect(request.apiVersion == 77)
        #expect(request.headerVersion == 1)
        #expect(request.clientId == "new-client")
    }

    @Test func dripFedRequestOverTheSocketDecodes() async throws {
        let handler = ScriptedHandler()
        try await withServer(handler: handler, logger: LogCapture().logger()) { _, port in
            var stream = requestFrame(apiKey: 1, apiVersion: 3, correlationId: 7, clientId: "drip", headerVersion: 1, body: ByteBuffer(string: "echo drip"))
            var closing = requestFrame(apiKey: 1, apiVersion: 3, correlationId: 8, clientId: "drip", headerVersion: 1, body: ByteBuffer(string: "close"))
            stream.writeBuffer(&closing)
            let chunks = stream.readableBytesView.map { ByteBuffer(bytes: [$0]) }
            var received = try await rawExchange(port: port, chunks: chunks)
            let frame = try #require(try KafkaFrameDecoder.nextFrame(from: &received, maxFrameSize: 1000))
            let (correlationId, body) = try KafkaHeaders.parseResponse(frame: frame, headerVersion: 0)
            #expect(correlationId == 7)
            #expect(String(buffer: body) == "echo drip")
        }
    }

    @Test func closeWaitsUntilEarlierLargeResponsesAreOnTheWire() async throws {
        let size = 16 * 1024 * 1024
        try await withServer(handler: ScriptedHandler(), logger: LogCapture().logger()) { _, port in
            let big = requestFrame(apiKey: 1, apiVersion: 3, correlationId: 1, clientId: nil, headerVersion: 1, body: ByteBuffer(string: "big \(size)"))
            let closing = requestFrame(apiKey: 1, apiVersion: 3, correlationId: 2, clientId: nil, headerVersion: 1, body: ByteBuffer(string: "close"))
            var received = try await rawExchange(port: port, chunks: [big, closing], timeout: .seconds(30))
            let frame = try #require(try KafkaFrameDecoder.nextFrame(from: &received, maxFrameSize: 2 * size))
            let (correlationId, body) = try KafkaHeaders.parseResponse(frame: frame, headerVersion: 0)
            #expect(correlationId == 1)
            #expect(body.readableBytes == size)
            #expect(received.readableBytes == 0)
        }
    }

    @Test func idleConnectionIsClosed() async throws {
        let capture = LogCapture()
        try await withServer(handler: ScriptedHandler(), logger: capture.logger(), configure: { $0.idleTimeout = .milliseconds(200) }) { _, port in
            let received = try await rawExchange(port: port, chunks: [], timeout: .seconds(10))
            #expect(received.readableBytes == 0)
        }
        #expect(capture.lines.contains { $0.message.contains("idle") })
    }

    @Test func shutdownLetsAcceptedRequestsFinish() async throws {
        let handler = ScriptedHandler(gated: true)
        let configuration = KafkaServerConfiguration(port: 0, headerVersionResolver: testResolver, shutdownGracePeriod: .seconds(20))
        let capture = LogCapture()
        let server = KafkaServer(configuration: configuration, handler: handler, logger: capture.logger())
        let running = Task { try await server.run() }
        let port = try await withTimeout(.seconds(10)) { try await server.boundPort() }
        let connection = try await connect(port)
        let reply = Task { try await echo(connection, "echo last") }
        let accepted = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
        // A large response queued behind the gated one must still reach the client in full.
        let large = Task { try await echo(connection, "big 8388608").count }
        _ = try await withTimeout(.seconds(10)) { await handler.nextAccepted(1) }
        running.cancel()
        // New connections are refused once the listener is closed; the close shows only as a refused connect, so poll.
        let refused = await waitUntil(timeout: .seconds(5)) {
            guard let late = try? await connect(port) else { return true }
            await late.close()
            return false
        }
        #expect(refused)
        handler.release(accepted[0])
        #expect(try await withTimeout(.seconds(10)) { try await reply.value } == "echo last")
        #expect(try await withTimeout(.seconds(10)) { try await large.value } == 8_388_608)
        try await withTimeout(.seconds(10)) { try await running.value }
        #expect(capture.lines(atLeast: .warning).isEmpty)
    }
}

@Suite(.timeLimit(.minutes(1))) struct BindTests {
    @Test func bindingATakenPortFailsRunAndBoundPort() async throws {
        try await withServer(handler: ScriptedHandler(), logger: LogCapture().logger()) { _, port in
            let configuration = KafkaServerConfiguration(port: port, headerVersionResolver: testResolver)
            let second = KafkaServer(configuration: configuration, handler: ScriptedHandler(), logger: LogCapture().logger())
            await #expect(throws: (any Error).self) { try await second.run() }
            await #expect(throws: (any Error).self) { _ = try await second.boundPort() }
        }
    }

    @Test func aServerThatNeverRanCanBeReleased() {
        // Dropping an unrun server must not trip a leaked-promise check.
        _ = KafkaServer(
            configuration: KafkaServerConfiguration(port: 0, headerVersionResolver: testResolver),
            handler: ScriptedHandler(), logger: LogCapture().logger()
        )
    }
}

@Suite(.timeLimit(.minutes(1))) struct ShutdownRaceTests {
    /// Connections accepted while the listener closes must be closed cleanly, not dropped (a dropped one traps).
    @Test func shutdownRightAfterABurstOfConnectionsDoesNotTrap() async throws {
        for _ in 0..<5 {
            let configuration = KafkaServerConfiguration(port: 0, headerVersionResolver: testResolver, shutdownGracePeriod: .seconds(5))
            let server = KafkaServer(configuration: configuration, handler: ScriptedHandler(), logger: LogCapture().logger())
            let running = Task { try await server.run() }
            let port = try await withTimeout(.seconds(10)) { try await server.boundPort() }
            let channels = try await withThrowingTaskGroup(of: (any Channel)?.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                            .connect(host: "127.0.0.1", port: port).get()
                    }
                }
                var opened: [any Channel] = []
                for try await channel in group { if let channel { opened.append(channel) } }
                return opened
            }
            running.cancel()
            try await withTimeout(.seconds(10), "server shutdown") { try await running.value }
            for channel in channels { try? await channel.close() }
            #expect(channels.count == 64)
        }
    }
}
