import ClusterMetadata
import Foundation
import KafkaProtocol
import NIOCore
import Testing
import TestKit

/// Mutation fuzzing of the command and snapshot decoders: no input may crash them, and anything
/// that does decode must apply (or be rejected) without crashing too.
@Suite struct FuzzTests {
    static var seed: UInt64 {
        ProcessInfo.processInfo.environment["FLOE_FUZZ_SEED"].flatMap { UInt64($0) } ?? 20_261_121
    }

    static func mutate(_ input: [UInt8], corpus: [[UInt8]], rng: inout SeededRandom) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            case 1 where !bytes.isEmpty: bytes[position] = UInt8.random(in: 0...255, using: &rng)
            case 2 where !bytes.isEmpty: bytes[position] = [0x00, 0x7F, 0x80, 0xFF][Int.random(in: 0..<4, using: &rng)]
            case 3: bytes = Array(bytes.prefix(position))
            case 4: bytes.insert(contentsOf: (0..<Int.random(in: 1...6, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: position)
            case 5 where !bytes.isEmpty: bytes.removeSubrange(position..<min(bytes.count, position + Int.random(in: 1...8, using: &rng)))
            case 6:
                // Huge varint where a count or length is expected.
                bytes.insert(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF, 0x0F], at: position)
            default:
                let other = corpus[Int.random(in: 0..<corpus.count, using: &rng)]
                let cut = other.isEmpty ? 0 : Int.random(in: 0..<other.count, using: &rng)
                bytes = Array(bytes.prefix(position)) + other.suffix(from: cut)
            }
        }
        return bytes
    }

    @Test func commandDecoderSurvivesMutations() throws {
        let seed = Self.seed
        var base = Cluster()
        base.register(1)
        base.register(6, .walWriter)
        base.createTopic("t", partitions: 3)
        base.appendRecords("t", 0, count: 5)
        let corpus = (EncodingTests.examples + DeterminismTests.run(seed: seed, steps: 300).commands).map {
            Array($0.encode().readableBytesView)
        }
        var rng = SeededRandom(seed: seed)
        var decoded = 0
        let iterations = 100_000
        for _ in 0..<iterations {
            let input = Self.mutate(corpus[Int.random(in: 0..<corpus.count, using: &rng)], corpus: corpus, rng: &rng)
            guard let command = try? MetadataCommand(decoding: ByteBuffer(bytes: input)) else { continue }
            decoded += 1
            var state = base.state
            _ = state.apply(command, index: base.index + 1)
            #expect(try MetadataCommand(decoding: command.encode()) == command, "seed \(seed)")
        }
        print("command fuzz seed \(seed): \(iterations) mutated inputs, \(decoded) decoded")
        // Some mutations must survive decoding, or the fuzzer only exercises the first byte checks.
        #expect(decoded > iterations / 50, "seed \(seed): only \(decoded) decoded")
    }

    @Test func snapshotDecoderSurvivesMutations() {
        let seed = Self.seed
        var generator = CommandGenerator(seed: seed)
        var state = MetadataState()
        var corpus: [[UInt8]] = []
        for step in 1...160 {
            _ = state.apply(generator.next(for: state), index: UInt64(step))
            if step % 16 == 0 { corpus.append(Array(state.encodeSnapshot().readableBytesView)) }
        }
        var rng = SeededRandom(seed: seed ^ 0x5A5A)
        var decoded = 0
        let iterations = 100_000
        for _ in 0..<iterations {
            let input = Self.mutate(corpus[Int.random(in: 0..<corpus.count, using: &rng)], corpus: corpus, rng: &rng)
            guard var loaded = try? MetadataState(snapshot: ByteBuffer(bytes: input)) else { continue }
            decoded += 1
            // A loaded snapshot must keep working: re-encode and apply a few commands.
            #expect((try? MetadataState(snapshot: loaded.encodeSnapshot())) == loaded, "seed \(seed)")
            _ = loaded.apply(generator.next(for: loaded), index: loaded.lastAppliedIndex &+ 1)
        }
        print("snapshot fuzz seed \(seed): \(iterations) mutated inputs, \(decoded) decoded; corpus sizes \(corpus.map(\.count))")
        #expect(decoded > 0, "seed \(seed): no mutated snapshot decoded")
    }
}
