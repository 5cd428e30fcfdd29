/// Object keys with a hashed prefix, so consecutive ids land on different store partitions.
public enum ObjectKey {
    /// What an object holds (DESIGN.md §3).
    public enum Kind: String, Sendable, CaseIterable {
        case streamSet = "ss"
        case stream = "so"
        case routed = "ro"

        /// The kind stored in the metadata as `code` (ClusterMetadata's `ObjectKind` raw values:
        /// 0 stream set, 1 stream, 2 routed); nil for a code this build does not know.
        public init?(metadataCode code: UInt8) {
            switch code {
            case 0: self = .streamSet
            case 1: self = .stream
            case 2: self = .routed
            default: return nil
            }
        }
    }

    /// The key of the object with metadata id `id` and kind code `code` (see `Kind(metadataCode:)`);
    /// an unknown code gets the stream-set kind, whose key a reader then fails to find.
    public static func make(id: Int64, metadataCode code: UInt8) -> String {
        make(id: UInt64(bitPattern: id), kind: Kind(metadataCode: code) ?? .streamSet)
    }

    /// `HHHHHHHH/KIND/IIIIIIIIIIIIIIII`: eight hex digits of a hash of the id, the kind, the id in 16 hex digits.
    public static func make(id: UInt64, kind: Kind) -> String {
        "\(hex(UInt64(prefixHash(id)), digits: 8))/\(kind.rawValue)/\(hex(id, digits: 16))"
    }

    /// The kind and id of a key made by `make`, or nil if it is not one (including a wrong prefix).
    public static func parse(_ key: String) -> (kind: Kind, id: UInt64)? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 8, parts[2].count == 16,
              let kind = Kind(rawValue: String(parts[1])),
              let id = UInt64(parts[2], radix: 16),
              UInt32(parts[0], radix: 16) == prefixHash(id)
        else { return nil }
        return (kind, id)
    }

    /// SplitMix64's finaliser: cheap, stable across releases and well spread even for sequential ids.
    static func prefixHash(_ id: UInt64) -> UInt32 {
        var z = id &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt32(truncatingIfNeeded: (z ^ (z >> 31)) >> 32)
    }

    private static func hex(_ value: UInt64, digits: Int) -> String {
        let raw = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - raw.count)) + raw
    }
}
