import NIOCore
import Testing
@testable import KafkaProtocol

@Suite struct VarintTests {
    @Test(arguments: [Int32.min, -300, -1, 0, 1, 63, 64, 300, Int32.max])
    func zigzagRoundTrip(value: Int32) throws {
        var buffer = ByteBuffer()
        buffer.writeVarint(value)
        #expect(try buffer.readVarint() == value)
        #expect(buffer.readableBytes == 0)
    }

    @Test func minusOneIsOneByte() {
        var buffer = ByteBuffer()
        buffer.writeVarint(-1)
        #expect(Array(buffer.readableBytesView) == [0x01])
    }

    @Test func overlongVarintIsRejected() {
        var buffer = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        #expect(throws: ProtocolError.malformedVarint) { try buffer.readUnsignedVarint() }
    }
}
