/// Where a group's coordinator lives: the leader of the `__consumer_offsets` partition its id hashes
/// to, computed exactly as Kafka does so a group keeps its partition if it ever moves between systems.
public enum CoordinatorPlacement {
    /// The internal topic holding committed offsets and group metadata.
    public static let offsetsTopic = "__consumer_offsets"

    /// Java's `String.hashCode()`: `s[0]*31^(n-1) + … + s[n-1]` over UTF-16 code units, wrapping in Int32.
    public static func javaHashCode(_ string: String) -> Int32 {
        var hash: Int32 = 0
        for unit in string.utf16 { hash = hash &* 31 &+ Int32(unit) }
        return hash
    }

    /// Kafka's `Utils.abs`: the absolute value, with `Int32.min` mapped to 0 rather than overflowing.
    public static func kafkaAbs(_ value: Int32) -> Int32 {
        value == .min ? 0 : abs(value)
    }

    /// The `__consumer_offsets` partition of `groupId` when the topic has `partitionCount` partitions.
    public static func partition(for groupId: String, partitionCount: Int32) -> Int32 {
        guard partitionCount > 0 else { return 0 }
        return kafkaAbs(javaHashCode(groupId)) % partitionCount
    }
}
