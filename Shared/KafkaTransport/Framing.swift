import NIOCore

/// Splits a byte stream into Kafka frames (the bytes after each int32 size field).
///
/// The size field is validated as soon as its 4 bytes are available, before the frame is
/// accumulated, so a peer cannot make us buffer more than `maxFrameSize` bytes per frame.
public struct KafkaFrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    /// Largest accepted value of the size field.
    public let maxFrameSize: Int

    /// A decoder rejecting frames above `maxFrameSize` bytes.
    public init(maxFrameSize: Int = KafkaTransport.defaultMaxFrameSize) {
        self.maxFrameSize = maxFrameSize
    }

    /// Removes one complete frame from the front of `buffer` and returns it as a zero-copy slice,
    /// or returns nil (consuming nothing) when more bytes are needed.
    public static func nextFrame(from buffer: inout ByteBuffer, maxFrameSize: Int) throws(KafkaTransportError) -> ByteBuffer? {
        guard let size = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: Int32.self) else {
            return nil
        }
        guard size >= 0, Int(size) <= maxFrameSize else {
            throw .frameTooLarge(size: Int(size), limit: maxFrameSize)
        }
        guard buffer.readableBytes - 4 >= Int(size) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        // Cannot fail: availability was checked just above.
        return buffer.readSlice(length: Int(size)) ?? ByteBuffer()
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.nextFrame(from: &buffer, maxFrameSize: maxFrameSize) else {
            return .needMoreData
        }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A partial frame at EOF is dropped: the peer is gone, nobody can be answered.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
