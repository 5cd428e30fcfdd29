import NIOCore
import Testing

@testable import KafkaRecords
import TestKit

@Suite struct CompressionTests {
    static let codecs: [CompressionCodec] = [.gzip, .snappy, .lz4, .zstd]

    @Test(arguments: codecs)
    func roundTripSizes(codec: CompressionCodec) throws {
        var rng = SeededRandom(seed: UInt64(codec.rawValue))
        for size in [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 200_000] {
            let input = size % 2 == 0
                ? jsonLikePayload(bytes: size, using: &rng) : ByteBuffer(bytes: randomBytes(size, using: &rng))
            let compressed = try Compression.compress(codec, input)
            if size == 200_000 { #expect(compressed.readableBytes < size / 3, "\(codec) should compress JSON") }
            let output = try Compression.decompress(codec, compressed, maxOutputBytes: size)
            #expect(output == input, "\(codec) size \(size)")
        }
    }

    @Test func snappyCompressWritesXerialFraming() throws {
        var rng = SeededRandom(seed: 5)
        let input = jsonLikePayload(bytes: 70_000, using: &rng)
        var compressed = try Compression.compress(.snappy, input)
        let magic = compressed.readBytes(length: 8)
        let version = compressed.readInteger(as: Int32.self)
        let compatible = compressed.readInteger(as: Int32.self)
        #expect(magic == [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00])
        #expect(version == 1 && compatible == 1)
        var blocks = 0
        while compressed.readableBytes > 0, blocks < 100 {
            let length = compressed.readInteger(as: Int32.self)
            try #require(length != nil)
            compressed.moveReaderIndex(forwardBy: Int(length ?? 0))
            blocks += 1
        }
        #expect(blocks == 3)  // 32 KiB blocks
    }

    @Test(arguments: codecs)
    func decompressionBombIsCapped(codec: CompressionCodec) throws {
        let zeros = ByteBuffer(repeating: 0, count: 4 << 20)
        let compressed = try Compression.compress(codec, zeros)
        #expect(compressed.readableBytes < 1 << 20)
        #expect(throws: RecordBatchError.tooLarge(limit: 1 << 20)) {
            _ = try Compression.decompress(codec, compressed, maxOutputBytes: 1 << 20)
        }
        #expect(throws: RecordBatchError.tooLarge(limit: (4 << 20) - 1)) {
            _ = try Compression.decompress(codec, compressed, maxOutputBytes: (4 << 20) - 1)
        }
        let exact = try Compression.decompress(codec, compressed, maxOutputBytes: 4 << 20)
        #expect(exact.readableBytes == 4 << 20)
    }

    @Test(arguments: codecs)
    func garbageIsAnError(codec: CompressionCodec) {
        // [0] alone is a valid raw snappy block (empty output), so it is garbage only elsewhere.
        var inputs: [[UInt8]] = [[], [0xFF, 0xFF, 0xFF, 0xFF], Array("not compressed at all".utf8)]
        if codec != .snappy { inputs.append([0]) }
        for input in inputs {
            #expect(throws: RecordBatchError.self) {
                _ = try Compression.decompress(codec, ByteBuffer(bytes: input), maxOutputBytes: 1 << 20)
            }
        }
    }

    @Test func truncatedStreamsAreErrors() throws {
        var rng = SeededRandom(seed: 9)
        let input = jsonLikePayload(bytes: 50_000, using: &rng)
        for codec in Self.codecs {
            let compressed = try Compression.compress(codec, input)
            for cut in [compressed.readableBytes - 1, compressed.readableBytes / 2, 10] {
                let truncated = compressed.getSlice(at: 0, length: cut)!
                #expect(throws: RecordBatchError.self, "\(codec) cut at \(cut)") {
                    _ = try Compression.decompress(codec, truncated, maxOutputBytes: 1 << 20)
                }
            }
        }
    }

    @Test func errorCodes() {
        #expect(RecordBatchError.corrupt("x").kafkaErrorCode == 2)
        #expect(RecordBatchError.crcMismatch(stored: 1, computed: 2).kafkaErrorCode == 2)
        #expect(RecordBatchError.unsupportedCodec(5).kafkaErrorCode == 76)
        #expect(RecordBatchError.invalidRecord("x").kafkaErrorCode == 87)
        #expect(RecordBatchError.decompressionFailed(.zstd, "x").kafkaErrorCode == 2)
    }
}

@Suite struct ForeignPayloadTests {
    @Test(arguments: [
        ("payload.gzip", CompressionCodec.gzip),
        ("payload-multimember.gzip", .gzip),
        ("payload-xerial.snappy", .snappy),
        ("payload-raw.snappy", .snappy),
        ("payload.lz4", .lz4),
        ("payload-linked-checksum.lz4", .lz4),
        ("payload-size.zstd", .zstd),
        ("payload-nosize.zstd", .zstd),
    ])
    func decodesPythonCompressedPayload(name: String, codec: CompressionCodec) throws {
        let expected = try fixture("payload.bin")
        let compressed = try fixture(name)
        let output = try Compression.decompress(codec, compressed, maxOutputBytes: expected.readableBytes)
        #expect(output == expected)
        #expect(throws: RecordBatchError.tooLarge(limit: expected.readableBytes - 1)) {
            _ = try Compression.decompress(codec, compressed, maxOutputBytes: expected.readableBytes - 1)
        }
    }
}
