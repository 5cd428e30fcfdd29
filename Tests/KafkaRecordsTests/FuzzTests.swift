import Foundation
import NIOCore
import Testing

@testable import KafkaRecords
import TestKit

/// Seeded robustness loop: mutated record sets and compressed payloads must produce values or
/// errors, never a crash, and never output beyond the cap.
@Suite struct FuzzTests {
    static let defaultSeed: UInt64 = 0x5EED_F10E

    static var seed: UInt64 {
        guard let text = ProcessInfo.processInfo.environment["FLOE_FUZZ_SEED"] else { return defaultSeed }
        if text.hasPrefix("0x") { return UInt64(text.dropFirst(2), radix: 16) ?? defaultSeed }
        return UInt64(text) ?? defaultSeed
    }

    static let cap = 64 * 1024
    static let batchInputs = 70_000
    static let payloadInputs = 32_000

    static func batchCorpus<G: RandomNumberGenerator>(using rng: inout G) throws -> [[UInt8]] {
        var corpus: [[UInt8]] = []
        for codec in CompressionCodec.allCases {
            var builder = RecordBatchBuilder(codec: codec, producerId: 3, producerEpoch: 0, baseSequence: 0)
            for index in 0..<Int.random(in: 1...6, using: &rng) {
                let size = Int.random(in: 0...300, using: &rng)
                try builder.append(
                    timestamp: 1_000 + Int64(index), key: index % 2 == 0 ? nil : ByteBuffer(string: "k\(index)"),
                    value: jsonLikePayload(bytes: size, using: &rng),
                    headers: index % 3 == 0 ? [RecordHeader(key: "h", value: nil)] : [])
            }
            corpus.append(try builder.build().bytes.bytesArray)
        }
        corpus.append(
            try RecordBatchBuilder.endTransactionMarker(
                .commit, producerId: 1, producerEpoch: 1, coordinatorEpoch: 1, timestamp: 1
            ).bytes.bytesArray)
        // A multi-batch record set and a compressed bomb inside a valid batch.
        corpus.append(corpus[0] + corpus[2] + corpus[4])
        var bomb = RecordBatchBuilder(codec: .zstd)
        try bomb.append(timestamp: 0, key: nil, value: ByteBuffer(repeating: 0x41, count: 4 * cap))
        corpus.append(try bomb.build().bytes.bytesArray)
        return corpus
    }

    static func payloadCorpus<G: RandomNumberGenerator>(using rng: inout G) throws -> [(CompressionCodec, [UInt8])] {
        var corpus: [(CompressionCodec, [UInt8])] = []
        let text = jsonLikePayload(bytes: 2_000, using: &rng)
        let zeros = ByteBuffer(repeating: 0, count: 8 * cap)
        for codec in [CompressionCodec.gzip, .snappy, .lz4, .zstd] {
            corpus.append((codec, try Compression.compress(codec, text).bytesArray))
            corpus.append((codec, try Compression.compress(codec, zeros).bytesArray))
        }
        return corpus
    }

    static func mutate<G: RandomNumberGenerator>(_ input: [UInt8], using rng: inout G) -> [UInt8] {
        var bytes = input
        switch Int.random(in: 0..<8, using: &rng) {
        case 0:
            bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
        case 1, 2:
            for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            }
        case 3:
            // Random big-endian int32 over a length-like field, or anywhere.
            let targets = [8, 57, 61, 12, 16, 21, Int.random(in: 0..<max(1, bytes.count), using: &rng)]
            let at = targets[Int.random(in: 0..<targets.count, using: &rng)]
            let value = UInt32.random(in: 0...UInt32.max, using: &rng)
            for k in 0..<4 where at + k < bytes.count { bytes[at + k] = UInt8(truncatingIfNeeded: value >> (24 - 8 * k)) }
        case 4:
            bytes = randomBytes(Int.random(in: 0...300, using: &rng), using: &rng)
        case 5:
            let at = Int.random(in: 0...bytes.count, using: &rng)
            bytes.insert(contentsOf: randomBytes(Int.random(in: 1...16, using: &rng), using: &rng), at: at)
        case 6:
            // Varint bytes with the continuation bit set, to stress length decoding.
            for _ in 0..<Int.random(in: 1...6, using: &rng) where !bytes.isEmpty {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] |= 0x80
            }
        default:
            if !bytes.isEmpty { bytes.removeSubrange(Int.random(in: 0..<bytes.count, using: &rng)..<bytes.count) }
            bytes += randomBytes(Int.random(in: 0...64, using: &rng), using: &rng)
        }
        return bytes
    }

    @Test func mutatedInputsNeverCrashOrExceedTheCap() throws {
        let seed = Self.seed
        print("KafkaRecords fuzz seed: \(seed) (FLOE_FUZZ_SEED overrides)")
        var rng = SeededRandom(seed: seed)
        let batches = try Self.batchCorpus(using: &rng)
        let payloads = try Self.payloadCorpus(using: &rng)
        var inputs = 0
        var parsedBatches = 0
        var rejected = 0

        for _ in 0..<Self.batchInputs {
            let input = ByteBuffer(bytes: Self.mutate(batches[Int.random(in: 0..<batches.count, using: &rng)], using: &rng))
            inputs += 1
            var iterator = RecordBatch.batches(in: input, maxBatchBytes: 1 << 20)
            var walked = 0
            while walked < 16 {
                let next: RecordBatch?
                do { next = try iterator.next() } catch {
                    rejected += 1
                    break
                }
                guard let batch = next else { break }
                walked += 1
                _ = batch.verifyCRC()
                do {
                    let records = try batch.records(maxUncompressedBytes: Self.cap)
                    parsedBatches += 1
                    let bytes = records.reduce(0) { $0 + ($1.key?.readableBytes ?? 0) + ($1.value?.readableBytes ?? 0) }
                    #expect(bytes <= Self.cap)
                } catch {
                    rejected += 1
                }
                _ = try? batch.validate(maxUncompressedBytes: Self.cap)
                _ = try? batch.controlType(maxUncompressedBytes: Self.cap)
            }
            #expect(walked <= 16)
        }

        for _ in 0..<Self.payloadInputs {
            let (codec, base) = payloads[Int.random(in: 0..<payloads.count, using: &rng)]
            // Mostly the payload's own codec; sometimes a different decoder sees it.
            let decoder = Int.random(in: 0..<5, using: &rng) == 0
                ? [CompressionCodec.gzip, .snappy, .lz4, .zstd][Int.random(in: 0..<4, using: &rng)] : codec
            let input = ByteBuffer(bytes: Self.mutate(base, using: &rng))
            inputs += 1
            do {
                let output = try Compression.decompress(decoder, input, maxOutputBytes: Self.cap)
                #expect(output.readableBytes <= Self.cap)
                #expect(output.capacity <= 2 * Self.cap)
            } catch {
                rejected += 1
            }
        }

        print("KafkaRecords fuzz: \(inputs) inputs, \(parsedBatches) batches parsed, \(rejected) rejections")
        #expect(inputs >= 100_000)
        #expect(parsedBatches > 0 && rejected > 0)
    }
}
