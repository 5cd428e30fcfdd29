import NIOCore
import TestKit
@testable import KafkaProtocol

/// A struct the generated test code can fill with non-default values for a given version.
protocol SampleBuildable {
    static func sample(version: Int16, _ sampler: inout Sampler) -> Self
}

/// A top-level message with a sample builder.
protocol SampleableMessage: KafkaMessage, SampleBuildable {}

/// Deterministic value source for generated samples.
struct Sampler {
    private var random: SeededRandom
    /// When true, fields that may be null in the version are set to null.
    var nulls: Bool

    init(seed: UInt64, nulls: Bool) {
        self.random = SeededRandom(seed: seed)
        self.nulls = nulls
    }

    mutating func next() -> UInt64 { random.next() }

    mutating func below(_ bound: Int) -> Int {
        Int(next() % UInt64(bound))
    }

    func wantsNull(_ allowed: Bool) -> Bool { nulls && allowed }

    mutating func bool(avoiding value: Bool) -> Bool { !value }

    private mutating func integer<T: FixedWidthInteger>(avoiding value: T) -> T {
        // Two draws differ from a single value except with negligible odds; the third is forced.
        for _ in 0..<2 {
            let candidate = T(truncatingIfNeeded: next())
            if candidate != value { return candidate }
        }
        return value &+ 1
    }

    mutating func int8(avoiding value: Int8) -> Int8 { integer(avoiding: value) }
    mutating func int16(avoiding value: Int16) -> Int16 { integer(avoiding: value) }
    mutating func int32(avoiding value: Int32) -> Int32 { integer(avoiding: value) }
    mutating func int64(avoiding value: Int64) -> Int64 { integer(avoiding: value) }
    mutating func uint16(avoiding value: UInt16) -> UInt16 { integer(avoiding: value) }
    mutating func uint32(avoiding value: UInt32) -> UInt32 { integer(avoiding: value) }

    mutating func float64(avoiding value: Double) -> Double {
        // Finite, exactly representable values so equality after a round trip is meaningful.
        let candidate = Double(Int32(truncatingIfNeeded: next())) / 8
        return candidate == value ? candidate + 1 : candidate
    }

    mutating func uuid() -> KafkaUUID {
        KafkaUUID(high: next() | 1, low: next())
    }

    mutating func string(avoiding value: String) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789-._é")
        var result = ""
        let length = 1 + below(12)
        for _ in 0..<length { result.append(alphabet[below(alphabet.count)]) }
        return result == value ? result + "x" : result
    }

    mutating func bytes() -> ByteBuffer {
        var buffer = ByteBuffer()
        let length = 1 + below(40)
        for _ in 0..<length { buffer.writeInteger(UInt8(truncatingIfNeeded: next())) }
        return buffer
    }

    /// Two unknown tagged fields with tags above every known tag of the struct.
    mutating func unknownTaggedFields(above maxKnownTag: Int) -> [UnknownTaggedField] {
        let first = UInt32(maxKnownTag + 1 + below(3))
        let second = first + 1 + UInt32(below(200))
        return [UnknownTaggedField(tag: first, data: bytes()), UnknownTaggedField(tag: second, data: bytes())]
    }
}
