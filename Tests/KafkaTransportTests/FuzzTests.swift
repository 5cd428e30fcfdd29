import Foundation
import KafkaProtocol
import NIOCore
import NIOEmbedded
import Testing

@testable import KafkaTransport
import TestKit

@Suite struct FuzzTests {
    static let inputCount = 100_000

    static func seed() -> UInt64 {
        if let text = ProcessInfo.processInfo.environment["FLOE_FUZZ_SEED"], let value = UInt64(text) { return value }
        return UInt64.random(in: 0...UInt64.max)
    }

    /// A plausible request stream: one to three frames with random header versions, client ids, tags and bodies.
    static func validStream(_ rng: inout SeededRandom) -> ByteBuffer {
        var stream = ByteBuffer()
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let apiKey: Int16 = [1, 18, 99, Int16.random(in: .min ... .max, using: &rng)].randomElement(using: &rng)!
            let apiVersion = Int16.random(in: -1...20, using: &rng)
            let headerVersion = Int16.random(in: 0...2, using: &rng)
            let clientId: String? = Bool.random(using: &rng) ? nil : String(repeating: "c", count: Int.random(in: 0...20, using: &rng))
            let tags = (0..<Int.random(in: 0...3, using: &rng)).map { index in
                (UInt32(index * 2), (0..<Int.random(in: 0...5, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
            let body = ByteBuffer(bytes: (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            var frame = requestFrame(
                apiKey: apiKey, apiVersion: apiVersion, correlationId: Int32.random(in: .min ... .max, using: &rng),
                clientId: clientId, headerVersion: headerVersion, taggedFields: tags, body: body
            )
            stream.writeBuffer(&frame)
        }
        return stream
    }

    static func mutate(_ input: ByteBuffer, _ rng: inout SeededRandom) -> ByteBuffer {
        var bytes = Array(input.readableBytesView)
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: // truncation
            bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
        case 1: // bit flips
            for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= 1 << UInt8.random(in: 0...7, using: &rng)
            }
        case 2: // random size field at the front
            let size = [Int32.random(in: .min ... .max, using: &rng), Int32.random(in: -2...300, using: &rng)].randomElement(using: &rng)!
            withUnsafeBytes(of: size.bigEndian) { raw in
                for index in 0..<min(4, bytes.count) { bytes[index] = raw[index] }
            }
        case 3: // random bytes entirely
            bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        case 4: // random bytes spliced in
            let at = Int.random(in: 0...bytes.count, using: &rng)
            bytes.insert(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: at)
        default: // unchanged valid input
            break
        }
        return ByteBuffer(bytes: bytes)
    }

    /// Decodes every frame in `input` directly; checks the invariants and returns the frames.
    static func checkDirect(_ input: ByteBuffer, maxFrameSize: Int) -> (frames: [ByteBuffer], failed: Bool) {
        var buffer = input
        var frames: [ByteBuffer] = []
        // Each successful step consumes at least the 4-byte size field.
        for _ in 0...(input.readableBytes / 4 + 1) {
            do {
                guard let frame = try KafkaFrameDecoder.nextFrame(from: &buffer, maxFrameSize: maxFrameSize) else { break }
                #expect(frame.readableBytes <= maxFrameSize)
                #expect(frame.readableBytes <= input.readableBytes - 4)
                frames.append(frame)
                checkHeader(frame)
            } catch {
                if case let .frameTooLarge(size, limit) = error {
                    #expect(size < 0 || size > limit)
                } else {
                    Issue.record("unexpected error \(error)")
                }
                return (frames, true)
            }
        }
        return (frames, false)
    }

    static func checkHeader(_ frame: ByteBuffer) {
        do {
            let request = try KafkaHeaders.parseRequest(frame: frame, resolver: testResolver)
            #expect(request.body.readableBytes <= frame.readableBytes)
            #expect((0...2).contains(request.headerVersion))
            // Whatever parsed must survive a re-encode (tagged fields are not re-emitted by the client writer).
            guard request.headerTaggedFields.isEmpty else { return }
            var again = ByteBuffer()
            KafkaHeaders.writeRequest(
                into: &again, apiKey: request.apiKey, apiVersion: request.apiVersion, correlationId: request.correlationId,
                clientId: request.clientId, headerVersion: request.headerVersion, body: request.body
            )
            again.moveReaderIndex(forwardBy: 4)
            let reparsed = try KafkaHeaders.parseRequest(frame: again, resolver: { _, _ in request.headerVersion })
            #expect(reparsed.correlationId == request.correlationId)
            #expect(reparsed.clientId == request.clientId)
            #expect(reparsed.body == request.body)
        } catch {
            // Any thrown error is a KafkaTransportError by the function's typed throws; reaching here is fine.
        }
    }

    @Test func frameDecoderAndHeaderParserSurviveMutatedInput() throws {
        let seed = Self.seed()
        print("FuzzTests seed: \(seed) (set FLOE_FUZZ_SEED=\(seed) to replay)")
        var rng = SeededRandom(seed: seed)
        var decodedFrames = 0
        var rejected = 0
        var viaChannel = 0
        for index in 0..<Self.inputCount {
            let input = Self.mutate(Self.validStream(&rng), &rng)
            let maxFrameSize = [16, 64, 1024, KafkaTransport.defaultMaxFrameSize].randomElement(using: &rng)!
            let (frames, failed) = Self.checkDirect(input, maxFrameSize: maxFrameSize)
            decodedFrames += frames.count
            if failed { rejected += 1 }

            // Every 50th input also goes through the NIO handler in random chunks; it must agree with the direct decoder.
            if index % 50 == 0 {
                viaChannel += 1
                let channel = EmbeddedChannel(handler: ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: maxFrameSize)))
                var remaining = input
                var channelFrames: [ByteBuffer] = []
                var channelFailed = false
                while remaining.readableBytes > 0, !channelFailed {
                    let chunk = remaining.readSlice(length: Int.random(in: 1...max(1, remaining.readableBytes), using: &rng))!
                    do {
                        try channel.writeInbound(chunk)
                    } catch {
                        channelFailed = true
                    }
                    while let frame = try channel.readInbound(as: ByteBuffer.self) { channelFrames.append(frame) }
                }
                #expect(channelFrames == frames, "seed \(seed), input \(index)")
                #expect(channelFailed == failed, "seed \(seed), input \(index)")
                _ = try? channel.finish()
            }
        }
        print("FuzzTests: \(Self.inputCount) inputs, \(decodedFrames) frames decoded, \(rejected) rejected sizes, \(viaChannel) through the channel handler")
        #expect(decodedFrames > 0)
        #expect(rejected > 0)
    }
}
