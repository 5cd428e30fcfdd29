import NIOCore
import Testing
import KafkaProtocol

/// ControllerWrite's WriteId is a tagged field so clients and controllers of either side of it interoperate.
@Suite struct ControllerWriteIdTests {
    /// The request as encoded before WriteId existed: command, timeout, an empty tagged-field section.
    private func oldEncoding(command: [UInt8], timeoutMs: Int32) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeUnsignedVarint(UInt32(command.count + 1))
        buffer.writeBytes(command)
        buffer.writeInteger(timeoutMs)
        buffer.writeUnsignedVarint(0)
        return buffer
    }

    @Test func aRequestFromAnOldClientDecodesWithoutAnId() throws {
        var old = oldEncoding(command: [1, 5, 0], timeoutMs: 1234)
        let decoded = try ControllerWriteRequest(from: &old, version: 0)
        #expect(old.readableBytes == 0)
        #expect(decoded.writeId == .zero)
        #expect(decoded.command == ByteBuffer(bytes: [1, 5, 0]) && decoded.timeoutMs == 1234)
        #expect(decoded.unknownTaggedFields.isEmpty)

        // Without an id the request is byte for byte what old clients send.
        var request = ControllerWriteRequest()
        request.command = ByteBuffer(bytes: [1, 5, 0])
        request.timeoutMs = 1234
        var encoded = ByteBuffer()
        try request.encode(to: &encoded, version: 0)
        #expect(encoded == oldEncoding(command: [1, 5, 0], timeoutMs: 1234))
    }

    @Test func anOldControllerSkipsTheId() throws {
        var request = ControllerWriteRequest()
        request.command = ByteBuffer(bytes: [1, 18, 0])
        request.timeoutMs = 700
        request.writeId = KafkaUUID(high: 0x0123_4567_89AB_4DEF, low: 0x8877_6655_4433_2211)
        var encoded = ByteBuffer()
        try request.encode(to: &encoded, version: 0)
        #expect(encoded.readableBytes == oldEncoding(command: [1, 18, 0], timeoutMs: 700).readableBytes + 18)

        // What the decoder generated from the schema without WriteId does: fixed fields, then every tagged
        // field kept as unknown. It must consume the whole request and see the same command.
        var reader = encoded
        let command = try reader.readKafkaBytes(compact: true, field: "Command")
        let timeout = try reader.readKafkaInteger(as: Int32.self)
        let unknown = try reader.readUnknownTaggedFields()
        #expect(reader.readableBytes == 0)
        #expect(command == request.command && timeout == 700)
        #expect(unknown.map(\.tag) == [0] && unknown.first?.data.readableBytes == 16)

        var again = encoded
        let decoded = try ControllerWriteRequest(from: &again, version: 0)
        #expect(decoded == request)
        #expect(decoded.unknownTaggedFields.isEmpty)
    }

    @Test func aMalformedIdIsAnErrorNotATrap() throws {
        var buffer = ByteBuffer()
        buffer.writeUnsignedVarint(1)  // empty command
        buffer.writeInteger(Int32(5))
        buffer.writeUnsignedVarint(1)  // one tagged field
        buffer.writeUnsignedVarint(0)  // tag 0 (WriteId)
        buffer.writeUnsignedVarint(3)  // three bytes instead of sixteen
        buffer.writeBytes([1, 2, 3])
        #expect(throws: ProtocolError.self) { try ControllerWriteRequest(from: &buffer, version: 0) }
    }
}
