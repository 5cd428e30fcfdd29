/// SplitMix64: a small seeded generator, so a failing seed reproduces exactly.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<bound` (0 when `bound` is not positive), one draw whatever the type.
    public mutating func below<T: FixedWidthInteger>(_ bound: T) -> T {
        bound <= 0 ? 0 : T(next() % UInt64(bound))
    }

    /// A value in `low...high`.
    public mutating func between<T: FixedWidthInteger>(_ low: T, _ high: T) -> T {
        low + below(high - low + 1)
    }

    /// True with probability `permille / 1000`.
    public mutating func chance<T: FixedWidthInteger>(_ permille: T) -> Bool {
        below(1000) < Int(permille)
    }

    /// One of `items`, or nil when there are none.
    public mutating func pick<T>(_ items: [T]) -> T? {
        items.isEmpty ? nil : items[below(items.count)]
    }
}
