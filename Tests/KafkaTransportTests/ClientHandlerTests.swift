import KafkaProtocol
import NIOCore
import NIOEmbedded
import Testing

@testable import KafkaTransport

/// The client's channel handler driven step by step on an EmbeddedChannel (virtual time for timeouts).
@Suite struct ClientHandlerTests {
    private func makeChannel() throws -> (EmbeddedChannel, BrokenFlag) {
        let broken = BrokenFlag()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: 1024)))
        try channel.pipeline.syncOperations.addHandler(KafkaClientChannelHandler(broken: broken))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9092)).wait()
        return (channel, broken)
    }

    private func request(
        _ channel: EmbeddedChannel, body: String, headerVersion: Int16 = 1, responseHeaderVersion: Int16 = 0,
        oneway: Bool = false, timeout: Duration = .seconds(30)
    ) throws -> EventLoopFuture<ByteBuffer>? {
        let promise: EventLoopPromise<ByteBuffer>? = oneway ? nil : channel.eventLoop.makePromise()
        try channel.writeOutbound(KafkaOutboundRequest(
            apiKey: 1, apiVersion: 3, headerVersion: headerVersion, responseHeaderVersion: responseHeaderVersion,
            clientId: "cid", body: ByteBuffer(string: body), response: promise, timeout: timeout
        ))
        return promise?.futureResult
    }

    /// The bytes written for one request (size+header and body arrive as two writes).
    private func writtenFrame(_ channel: EmbeddedChannel) throws -> KafkaRequestFrame {
        var wire = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { wire.writeBuffer(&part) }
        let frame = try #require(try KafkaFrameDecoder.nextFrame(from: &wire, maxFrameSize: 1024))
        #expect(wire.readableBytes == 0)
        return try KafkaHeaders.parseRequest(frame: frame, resolver: { _, _ in 1 })
    }

    private func response(correlationId: Int32, headerVersion: Int16 = 0, body: String) -> ByteBuffer {
        var wire = KafkaHeaders.responsePrefix(correlationId: correlationId, headerVersion: headerVersion, bodySize: body.utf8.count)
        wire.writeString(body)
        return wire
    }

    @Test func correlationIdsIncreaseAndOnewayRequestsTakeNoResponseSlot() throws {
        let (channel, _) = try makeChannel()
        let first = try #require(try request(channel, body: "a"))
        #expect(try writtenFrame(channel).correlationId == 0)
        _ = try request(channel, body: "b", oneway: true)
        #expect(try writtenFrame(channel).correlationId == 1)
        let third = try #require(try request(channel, body: "c", headerVersion: 2, responseHeaderVersion: 1))
        let written = try writtenFrame(channel)
        #expect(written.correlationId == 2)
        #expect(written.clientId == "cid")

        try channel.writeInbound(response(correlationId: 0, body: "A"))
        try channel.writeInbound(response(correlationId: 2, headerVersion: 1, body: "C"))
        #expect(String(buffer: try first.wait()) == "A")
        #expect(String(buffer: try third.wait()) == "C")
        _ = try channel.finish()
    }

    @Test func wrongCorrelationIdFailsEverythingAndCloses() throws {
        let (channel, broken) = try makeChannel()
        let first = try #require(try request(channel, body: "a"))
        let second = try #require(try request(channel, body: "b"))
        try channel.writeInbound(response(correlationId: 5, body: "?"))
        #expect(throws: KafkaTransportError.self) { try first.wait() }
        #expect(throws: KafkaTransportError.self) { try second.wait() }
        #expect(broken.isSet)
        #expect(!channel.isActive)
    }

    @Test func unsolicitedResponseCloses() throws {
        let (channel, broken) = try makeChannel()
        try channel.writeInbound(response(correlationId: 0, body: "?"))
        #expect(broken.isSet)
        #expect(!channel.isActive)
    }

    @Test func timeoutFailsOnlyThatCallerWithTimedOutAndClosesTheConnection() throws {
        let (channel, broken) = try makeChannel()
        let slow = try #require(try request(channel, body: "slow", timeout: .milliseconds(100)))
        let later = try #require(try request(channel, body: "later", timeout: .seconds(30)))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(99))
        #expect(!broken.isSet)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(throws: KafkaTransportError.timedOut) { try slow.wait() }
        #expect(throws: KafkaTransportError.connectionClosed) { try later.wait() }
        #expect(!channel.isActive)
    }

    @Test func answeredRequestsDoNotTimeOutLater() throws {
        let (channel, broken) = try makeChannel()
        let quick = try #require(try request(channel, body: "q", timeout: .milliseconds(100)))
        try channel.writeInbound(response(correlationId: 0, body: "Q"))
        #expect(String(buffer: try quick.wait()) == "Q")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!broken.isSet)
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test func truncatedResponseHeaderIsMalformed() throws {
        let (channel, _) = try makeChannel()
        let pending = try #require(try request(channel, body: "a"))
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 2, 0, 0]))
        #expect {
            try pending.wait()
        } throws: { error in
            if case KafkaTransportError.malformedResponse = error { return true }
            return false
        }
    }
}
