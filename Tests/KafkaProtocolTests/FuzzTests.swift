import Foundation
import NIOCore
import Testing
@testable import KafkaProtocol

/// Tally of one fuzz run.
struct FuzzCounts {
    var inputs = 0
    var rejected = 0
    var truncations = 0
}

/// Mutates encoded samples and feeds them to the decoders: they must throw or decode, never trap,
/// hang or allocate more than the input can justify.
@Suite struct DecoderFuzzTests {
    static let defaultSeed: UInt64 = 0x0F10_E5EE_D000_0001
    static let inputsPerCorpusEntry = 80

    static func seed() -> UInt64 {
        if let text = ProcessInfo.processInfo.environment["FLOE_FUZZ_SEED"] {
            let trimmed = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
            if let value = UInt64(trimmed, radix: text.hasPrefix("0x") ? 16 : 10) { return value }
        }
        return defaultSeed
    }

    static func mutate(_ original: [UInt8], _ rng: inout Sampler) -> (bytes: [UInt8], isTruncation: Bool) {
        var bytes = original
        switch rng.below(6) {
        case 0:
            guard !bytes.isEmpty else { return (bytes, false) }
            return (Array(bytes.prefix(rng.below(bytes.count))), true)
        case 1:
            let flips = 1 + rng.below(4)
            for _ in 0..<flips where !bytes.isEmpty {
                let index = rng.below(bytes.count)
                bytes[index] ^= UInt8(1) << UInt8(rng.below(8))
            }
        case 2:
            // A length or count field claiming far more than the input holds (or a negative one).
            guard !bytes.isEmpty else { return (bytes, false) }
            let patterns: [[UInt8]] = [
                [0x7F, 0xFF, 0xFF, 0xFF], [0x80, 0x00, 0x00, 0x00], [0xFF, 0xFF, 0xFF, 0xFE], [0x7F, 0xFF],
                [0xFF, 0xFF, 0xFF, 0xFF, 0x0F], [0x80, 0x80, 0x80, 0x80, 0x08], [0xFE, 0xFF, 0xFF, 0xFF, 0x07],
                [0x00, 0x01, 0x00, 0x00],
            ]
            let pattern = patterns[rng.below(patterns.count)]
            let index = rng.below(bytes.count)
            for (offset, byte) in pattern.enumerated() where index + offset < bytes.count {
                bytes[index + offset] = byte
            }
        case 3:
            let length = rng.below(48)
            bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        case 4:
            let index = rng.below(bytes.count + 1)
            bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: index)
        default:
            guard !bytes.isEmpty else { return (bytes, false) }
            bytes.remove(at: rng.below(bytes.count))
        }
        return (bytes, false)
    }

    static func fuzz<M: SampleableMessage>(_ type: M.Type, _ rng: inout Sampler, _ counts: inout FuzzCounts) throws {
        for version in M.validVersions {
            for nulls in [false, true] {
                var sampler = Sampler(seed: rng.next(), nulls: nulls)
                let value = M.sample(version: version, &sampler)
                var encoded = ByteBuffer()
                try value.encode(to: &encoded, version: version)
                let original = Array(encoded.readableBytesView)
                for _ in 0..<inputsPerCorpusEntry {
                    let (bytes, isTruncation) = mutate(original, &rng)
                    var input = ByteBuffer(bytes: bytes)
                    counts.inputs += 1
                    do {
                        let decoded = try M(from: &input, version: version)
                        // Whatever decodes must re-encode without trapping (it may refuse, e.g. a null records field).
                        var sink = ByteBuffer()
                        try? decoded.encode(to: &sink, version: version)
                        #expect(!isTruncation, "\(M.self) v\(version): a strict prefix decoded")
                    } catch {
                        counts.rejected += 1
                        if isTruncation { counts.truncations += 1 }
                    }
                }
            }
        }
    }

    @Test func mutatedInputsNeverTrap() throws {
        let seed = Self.seed()
        print("decoder fuzz seed: 0x\(String(seed, radix: 16)) (override with FLOE_FUZZ_SEED)")
        var rng = Sampler(seed: seed, nulls: false)
        var counts = FuzzCounts()
        for type in allGeneratedMessageTypes {
            try Self.fuzz(type, &rng, &counts)
        }
        print("decoder fuzz: \(counts.inputs) inputs, \(counts.rejected) rejected, \(counts.truncations) truncations")
        #expect(counts.inputs >= 100_000)
        #expect(counts.truncations > 0)
        #expect(counts.rejected > counts.inputs / 4)
    }

    @Test func hugeArrayCountFailsFast() {
        // MetadataRequest v0 starts with the topics array: a 4-byte input claiming 2^31-1 elements.
        var classic = ByteBuffer(bytes: [0x7F, 0xFF, 0xFF, 0xFF])
        #expect(throws: ProtocolError.invalidLength(Int(Int32.max))) { try MetadataRequest(from: &classic, version: 0) }
        // Compact form at v9: uvarint 0xFFFFFFFF means 2^32-2 elements.
        var compact = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
        #expect(throws: ProtocolError.invalidLength(Int(UInt32.max) - 1)) { try MetadataRequest(from: &compact, version: 9) }
        // Negative classic count other than -1.
        var negative = ByteBuffer(bytes: [0x80, 0x00, 0x00, 0x00])
        #expect(throws: ProtocolError.self) { try MetadataRequest(from: &negative, version: 0) }
    }

    @Test func hugeStringAndBytesLengthsFailFast() {
        // ProduceRequest v3: transactional_id with int16 length 32767 but nothing after it.
        var string = ByteBuffer(bytes: [0x7F, 0xFF])
        #expect(throws: ProtocolError.truncated(needed: 32767, available: 0)) { try ProduceRequest(from: &string, version: 3) }
        // ProduceRequest v9: compact transactional_id claiming 2^32-2 bytes.
        var compact = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
        #expect(throws: ProtocolError.self) { try ProduceRequest(from: &compact, version: 9) }
        // A tagged-field section claiming 2^32-1 fields.
        var tags = ByteBuffer(bytes: [0x00, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
        #expect(throws: ProtocolError.invalidLength(Int(UInt32.max))) { try MetadataRequest(from: &tags, version: 9) }
    }

    @Test func arraysOfLargeStructsAreBoundedByTheirMinimumSize() {
        // Fetch v4 topics: each element takes at least 2 (name) + 4 (partition count) bytes, so 2 elements
        // cannot fit in the 7 bytes that follow the count.
        var bytes: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]  // replica, max wait, min bytes, max bytes, isolation
        bytes += [0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0]
        var buffer = ByteBuffer(bytes: bytes)
        #expect(throws: ProtocolError.invalidLength(2)) { try FetchRequest(from: &buffer, version: 4) }
    }
}
