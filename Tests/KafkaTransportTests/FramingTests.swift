import KafkaProtocol
import NIOCore
import NIOEmbedded
import Testing

@testable import KafkaTransport

@Suite struct FramingTests {
    @Test func splitsCompleteFramesAndWaitsForPartialOnes() throws {
        var input = ByteBuffer()
        input.writeKafkaInteger(Int32(3))
        input.writeBytes([1, 2, 3])
        input.writeKafkaInteger(Int32(0))
        input.writeKafkaInteger(Int32(5))
        input.writeBytes([9, 9])
        let first = try KafkaFrameDecoder.nextFrame(from: &input, maxFrameSize: 100)
        #expect(first.map { Array($0.readableBytesView) } == [1, 2, 3])
        let empty = try KafkaFrameDecoder.nextFrame(from: &input, maxFrameSize: 100)
        #expect(empty?.readableBytes == 0)
        let before = input.readerIndex
        #expect(try KafkaFrameDecoder.nextFrame(from: &input, maxFrameSize: 100) == nil)
        #expect(input.readerIndex == before, "a partial frame must not be consumed")
    }

    @Test(arguments: [Int32(-1), Int32.min, Int32(101), Int32.max])
    func rejectsSizeOutsideLimitFromTheSizeFieldAlone(size: Int32) {
        var input = ByteBuffer()
        input.writeKafkaInteger(size)
        #expect(throws: KafkaTransportError.frameTooLarge(size: Int(size), limit: 100)) {
            _ = try KafkaFrameDecoder.nextFrame(from: &input, maxFrameSize: 100)
        }
    }

    @Test func acceptsFrameExactlyAtLimit() throws {
        var input = ByteBuffer()
        input.writeKafkaInteger(Int32(100))
        input.writeRepeatingByte(7, count: 100)
        #expect(try KafkaFrameDecoder.nextFrame(from: &input, maxFrameSize: 100)?.readableBytes == 100)
    }

    @Test func dripFedBytesDecodeThroughTheChannelHandler() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: 1024)))
        var stream = ByteBuffer()
        var expected: [[UInt8]] = []
        for length in [0, 1, 5, 300] {
            let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ length) }
            expected.append(payload)
            stream.writeKafkaInteger(Int32(length))
            stream.writeBytes(payload)
        }
        var decoded: [[UInt8]] = []
        for byte in stream.readableBytesView {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            while let frame = try channel.readInbound(as: ByteBuffer.self) {
                decoded.append(Array(frame.readableBytesView))
            }
        }
        #expect(decoded == expected)
        #expect(try channel.finish().isClean)
    }

    @Test func oversizedSizeFieldErrorsThroughTheChannelHandler() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: 1024)))
        var input = ByteBuffer()
        input.writeKafkaInteger(Int32(1025))
        #expect(throws: KafkaTransportError.frameTooLarge(size: 1025, limit: 1024)) {
            try channel.writeInbound(input)
        }
        _ = try? channel.finish()
    }
}

@Suite struct HeaderTests {
    @Test func parsesHeaderV1WithClientId() throws {
        let frame = requestFrame(apiKey: 1, apiVersion: 3, correlationId: 77, clientId: "app-1", headerVersion: 1, body: buffer("body"))
        var sliced = frame
        sliced.moveReaderIndex(forwardBy: 4)
        let request = try KafkaHeaders.parseRequest(frame: sliced, resolver: testResolver)
        #expect(request.apiKey == 1)
        #expect(request.apiVersion == 3)
        #expect(request.correlationId == 77)
        #expect(request.clientId == "app-1")
        #expect(request.headerVersion == 1)
        #expect(request.headerTaggedFields.isEmpty)
        #expect(request.body == buffer("body"))
    }

    @Test func parsesHeaderV2WithNullClientIdAndTaggedFields() throws {
        let frame = requestFrame(
            apiKey: 1, apiVersion: 12, correlationId: -5, clientId: nil, headerVersion: 2,
            taggedFields: [(0, [1, 2]), (7, [])], body: buffer([0xAA])
        )
        var sliced = frame
        sliced.moveReaderIndex(forwardBy: 4)
        let request = try KafkaHeaders.parseRequest(frame: sliced, resolver: testResolver)
        #expect(request.clientId == nil)
        #expect(request.correlationId == -5)
        #expect(request.headerVersion == 2)
        #expect(request.headerTaggedFields == [
            UnknownTaggedField(tag: 0, data: buffer([1, 2])), UnknownTaggedField(tag: 7, data: ByteBuffer()),
        ])
        #expect(request.body == buffer([0xAA]))
    }

    @Test func headerV2ClientIdIsAClassicString() throws {
        // An int16 length of 3 followed by "abc"; read as a compact string it would be garbage.
        var frame = ByteBuffer(bytes: [0, 1, 0, 12, 0, 0, 0, 1, 0, 3])
        frame.writeString("abc")
        frame.writeBytes([0])
        let request = try KafkaHeaders.parseRequest(frame: frame, resolver: testResolver)
        #expect(request.clientId == "abc")
        #expect(request.body.readableBytes == 0)
    }

    @Test func unsupportedPairThrows() {
        let frame = ByteBuffer(bytes: [0, 99, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF])
        #expect(throws: KafkaTransportError.unsupportedVersion(apiKey: 99, apiVersion: 0)) {
            _ = try KafkaHeaders.parseRequest(frame: frame, resolver: testResolver)
        }
    }

    @Test func tooNewApiVersionsIsParsedAsHeaderV1() throws {
        var sliced = requestFrame(
            apiKey: 18, apiVersion: 42, correlationId: 9, clientId: "x", headerVersion: 2, body: buffer([5])
        )
        sliced.moveReaderIndex(forwardBy: 4)
        let request = try KafkaHeaders.parseRequest(frame: sliced, resolver: testResolver)
        #expect(request.apiVersion == 42)
        #expect(request.headerVersion == 1)
        #expect(request.clientId == "x")
        // The v2 tagged-field section stays in the body, which is never parsed for a too-new version.
        #expect(Array(request.body.readableBytesView) == [0, 5])
    }

    @Test(arguments: [
        [UInt8](), [0], [0, 1, 0], [0, 1, 0, 3, 0, 0, 0], // truncated before the correlation id
        [0, 1, 0, 3, 0, 0, 0, 1, 0], // truncated client id length
        [0, 1, 0, 3, 0, 0, 0, 1, 0, 5, 65], // client id shorter than its length
        [0, 1, 0, 3, 0, 0, 0, 1, 0xFF, 0xFE], // negative client id length other than -1
        [0, 1, 0, 3, 0, 0, 0, 1, 0, 1, 0xFF], // invalid UTF-8
        [0, 1, 0, 12, 0, 0, 0, 1, 0xFF, 0xFF], // missing tagged-field section
        [0, 1, 0, 12, 0, 0, 0, 1, 0xFF, 0xFF, 2, 5, 0, 3, 0], // tags out of order
        [0, 1, 0, 12, 0, 0, 0, 1, 0xFF, 0xFF, 1, 0, 9, 1], // tagged field longer than input
    ])
    func malformedHeadersThrow(bytes: [UInt8]) {
        #expect(throws: KafkaTransportError.self) {
            _ = try KafkaHeaders.parseRequest(frame: buffer(bytes), resolver: testResolver)
        }
    }

    @Test(arguments: [Int16(0), 1, 2])
    func clientRequestEncodingRoundTrips(headerVersion: Int16) throws {
        let resolver: KafkaHeaderVersionResolver = { _, _ in headerVersion }
        var frame = ByteBuffer()
        KafkaHeaders.writeRequest(
            into: &frame, apiKey: 3, apiVersion: 4, correlationId: 1234, clientId: "cli",
            headerVersion: headerVersion, body: buffer("payload")
        )
        let body = try #require(try KafkaFrameDecoder.nextFrame(from: &frame, maxFrameSize: 1000))
        let request = try KafkaHeaders.parseRequest(frame: body, resolver: resolver)
        #expect(request.correlationId == 1234)
        #expect(request.clientId == (headerVersion >= 1 ? "cli" : nil))
        #expect(request.body == buffer("payload"))
    }

    @Test(arguments: [Int16(0), 1])
    func responseHeaderRoundTrips(headerVersion: Int16) throws {
        var wire = KafkaHeaders.responsePrefix(correlationId: 42, headerVersion: headerVersion, bodySize: 3)
        wire.writeBytes([7, 8, 9])
        #expect(wire.readableBytes == (headerVersion == 1 ? 12 : 11))
        let frame = try #require(try KafkaFrameDecoder.nextFrame(from: &wire, maxFrameSize: 100))
        let (correlationId, body) = try KafkaHeaders.parseResponse(frame: frame, headerVersion: headerVersion)
        #expect(correlationId == 42)
        #expect(Array(body.readableBytesView) == [7, 8, 9])
    }
}
