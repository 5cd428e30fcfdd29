/// The topic configs Floe knows and how their values are checked. Unknown keys are rejected
/// (INVALID_CONFIG) rather than silently stored, so a typo does not look like it took effect.
public enum TopicConfig {
    enum Kind {
        case long(min: Int64)
        case int(min: Int64)
        case bool
        case ratio
        case choice(Set<String>)
        case list(Set<String>)
    }

    static let known: [String: Kind] = [
        "retention.ms": .long(min: -1),
        "retention.bytes": .long(min: -1),
        "cleanup.policy": .list(["delete", "compact"]),
        "max.message.bytes": .int(min: 0),
        "message.timestamp.type": .choice(["CreateTime", "LogAppendTime"]),
        "message.timestamp.difference.max.ms": .long(min: 0),
        "message.timestamp.before.max.ms": .long(min: 0),
        "message.timestamp.after.max.ms": .long(min: 0),
        "segment.bytes": .int(min: 14),
        "segment.ms": .long(min: 1),
        "segment.jitter.ms": .long(min: 0),
        "segment.index.bytes": .int(min: 4),
        "compression.type": .choice(["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        "delete.retention.ms": .long(min: 0),
        "min.compaction.lag.ms": .long(min: 0),
        "max.compaction.lag.ms": .long(min: 1),
        "min.cleanable.dirty.ratio": .ratio,
        "min.insync.replicas": .int(min: 1),
        "unclean.leader.election.enable": .bool,
        "file.delete.delay.ms": .long(min: 0),
        "flush.messages": .long(min: 1),
        "flush.ms": .long(min: 0),
        "index.interval.bytes": .int(min: 0),
        "preallocate": .bool,
        "message.downconversion.enable": .bool,
    ]

    /// Whether `key` is a list-valued config (the only kind APPEND and SUBTRACT apply to).
    public static func isList(_ key: String) -> Bool {
        if case .list = known[key] { return true }
        return false
    }

    /// Whether Floe knows `key`.
    public static func isKnown(_ key: String) -> Bool { known[key] != nil }

    /// Checks one key/value pair; INVALID_CONFIG for unknown keys or bad values.
    public static func validate(key: String, value: String) -> MetadataError? {
        guard let kind = known[key] else {
            return MetadataError(MetadataErrorCode.invalidConfig, "unknown topic config \(key)")
        }
        let bad = MetadataError(MetadataErrorCode.invalidConfig, "invalid value \(value) for \(key)")
        switch kind {
        case .long(let min):
            guard let number = Int64(value), number >= min else { return bad }
        case .int(let min):
            guard let number = Int32(value), Int64(number) >= min else { return bad }
        case .bool:
            guard value == "true" || value == "false" else { return bad }
        case .ratio:
            guard let number = Double(value), number >= 0, number <= 1 else { return bad }
        case .choice(let choices):
            guard choices.contains(value) else { return bad }
        case .list(let choices):
            for item in listItems(value) where !choices.contains(item) { return bad }
        }
        return nil
    }

    /// The items of a topic's `cleanup.policy` ("delete" when unset, Kafka's default).
    public static func cleanupPolicies(_ configs: [String: String]) -> Set<String> {
        guard let value = configs["cleanup.policy"] else { return ["delete"] }
        return Set(listItems(value))
    }

    /// Splits a comma-separated list value, trimming spaces and dropping empty items.
    static func listItems(_ value: String) -> [String] {
        value.split(separator: ",").map { item in
            String(item.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
        }.filter { !$0.isEmpty }
    }
}
