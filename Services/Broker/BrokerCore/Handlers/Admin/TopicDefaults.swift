import ClusterMetadata

/// The value of every topic config Floe knows when a topic does not set it: Kafka's documented
/// default, or the broker setting that stands in for it (`message.max.bytes`,
/// `log.message.timestamp.type`). DescribeConfigs, CreateTopics and the produce path read it here
/// so they agree.
public enum TopicDefaults {
    /// Kafka's `ConfigDef.Type` numbering as DescribeConfigs v3+ reports it.
    enum ConfigType: Int8 {
        case unknown = 0, boolean = 1, string = 2, int = 3, short = 4, long = 5, double = 6, list = 7
    }

    /// One topic config: Kafka's default, the broker config it falls back to, its type and a short description.
    struct Entry: Sendable {
        var name: String
        var kafkaDefault: String
        /// The broker config Kafka reports as the default's synonym, with the value in its own unit
        /// (e.g. `log.retention.hours` = 168 for `retention.ms` = 604800000).
        var brokerSynonym: String
        var brokerSynonymDefault: String
        var type: ConfigType
        var documentation: String
    }

    /// Every topic config Floe accepts, in name order (the order DescribeConfigs lists them).
    static let entries: [Entry] = [
        Entry(
            name: "cleanup.policy", kafkaDefault: "delete", brokerSynonym: "log.cleanup.policy",
            brokerSynonymDefault: "delete", type: .list,
            documentation: "What happens to old segments: delete (by retention), compact (keep the latest record per key), or both."),
        Entry(
            name: "compression.type", kafkaDefault: "producer", brokerSynonym: "compression.type",
            brokerSynonymDefault: "producer", type: .string,
            documentation: "Compression of stored batches; producer keeps whatever the producer sent."),
        Entry(
            name: "delete.retention.ms", kafkaDefault: "86400000", brokerSynonym: "log.cleaner.delete.retention.ms",
            brokerSynonymDefault: "86400000", type: .long,
            documentation: "How long tombstones are kept in compacted topics."),
        Entry(
            name: "file.delete.delay.ms", kafkaDefault: "60000", brokerSynonym: "log.segment.delete.delay.ms",
            brokerSynonymDefault: "60000", type: .long,
            documentation: "Delay before a dropped segment is removed from storage."),
        Entry(
            name: "flush.messages", kafkaDefault: "9223372036854775807", brokerSynonym: "log.flush.interval.messages",
            brokerSynonymDefault: "9223372036854775807", type: .long,
            documentation: "Accepted for compatibility; Floe makes every acknowledged batch durable in its WAL."),
        Entry(
            name: "flush.ms", kafkaDefault: "9223372036854775807", brokerSynonym: "log.flush.interval.ms",
            brokerSynonymDefault: "9223372036854775807", type: .long,
            documentation: "Accepted for compatibility; Floe makes every acknowledged batch durable in its WAL."),
        Entry(
            name: "index.interval.bytes", kafkaDefault: "4096", brokerSynonym: "log.index.interval.bytes",
            brokerSynonymDefault: "4096", type: .int,
            documentation: "Accepted for compatibility; object indexes are per block."),
        Entry(
            name: "max.compaction.lag.ms", kafkaDefault: "9223372036854775807",
            brokerSynonym: "log.cleaner.max.compaction.lag.ms", brokerSynonymDefault: "9223372036854775807", type: .long,
            documentation: "Longest time a record may stay uncompacted."),
        Entry(
            name: "max.message.bytes", kafkaDefault: "1048588", brokerSynonym: "message.max.bytes",
            brokerSynonymDefault: "1048588", type: .int,
            documentation: "Largest record batch the topic accepts."),
        Entry(
            name: "message.downconversion.enable", kafkaDefault: "true",
            brokerSynonym: "log.message.downconversion.enable", brokerSynonymDefault: "true", type: .boolean,
            documentation: "Accepted for compatibility; Floe serves only the v2 record format."),
        Entry(
            name: "message.timestamp.after.max.ms", kafkaDefault: "9223372036854775807",
            brokerSynonym: "log.message.timestamp.after.max.ms", brokerSynonymDefault: "9223372036854775807",
            type: .long, documentation: "How far in the future a CreateTime timestamp may be."),
        Entry(
            name: "message.timestamp.before.max.ms", kafkaDefault: "9223372036854775807",
            brokerSynonym: "log.message.timestamp.before.max.ms", brokerSynonymDefault: "9223372036854775807",
            type: .long, documentation: "How far in the past a CreateTime timestamp may be."),
        Entry(
            name: "message.timestamp.difference.max.ms", kafkaDefault: "9223372036854775807",
            brokerSynonym: "log.message.timestamp.difference.max.ms", brokerSynonymDefault: "9223372036854775807",
            type: .long, documentation: "Largest allowed gap between a CreateTime timestamp and the broker's clock."),
        Entry(
            name: "message.timestamp.type", kafkaDefault: "CreateTime", brokerSynonym: "log.message.timestamp.type",
            brokerSynonymDefault: "CreateTime", type: .string,
            documentation: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's time on append."),
        Entry(
            name: "min.cleanable.dirty.ratio", kafkaDefault: "0.5", brokerSynonym: "log.cleaner.min.cleanable.ratio",
            brokerSynonymDefault: "0.5", type: .double,
            documentation: "Share of uncompacted data that makes a compacted topic eligible for compaction."),
        Entry(
            name: "min.compaction.lag.ms", kafkaDefault: "0", brokerSynonym: "log.cleaner.min.compaction.lag.ms",
            brokerSynonymDefault: "0", type: .long,
            documentation: "Shortest time a record stays uncompacted."),
        Entry(
            name: "min.insync.replicas", kafkaDefault: "1", brokerSynonym: "min.insync.replicas",
            brokerSynonymDefault: "1", type: .int,
            documentation: "Accepted for compatibility; every acknowledged batch has one durable copy in the WAL."),
        Entry(
            name: "preallocate", kafkaDefault: "false", brokerSynonym: "log.preallocate",
            brokerSynonymDefault: "false", type: .boolean,
            documentation: "Accepted for compatibility; Floe keeps no segment files."),
        Entry(
            name: "retention.bytes", kafkaDefault: "-1", brokerSynonym: "log.retention.bytes",
            brokerSynonymDefault: "-1", type: .long,
            documentation: "Largest size a partition keeps before old data is dropped; -1 means no limit."),
        Entry(
            name: "retention.ms", kafkaDefault: "604800000", brokerSynonym: "log.retention.hours",
            brokerSynonymDefault: "168", type: .long,
            documentation: "How long records are kept before they are dropped; -1 means forever."),
        Entry(
            name: "segment.bytes", kafkaDefault: "1073741824", brokerSynonym: "log.segment.bytes",
            brokerSynonymDefault: "1073741824", type: .int,
            documentation: "Accepted for compatibility; data lives in objects, not segments."),
        Entry(
            name: "segment.index.bytes", kafkaDefault: "10485760", brokerSynonym: "log.index.size.max.bytes",
            brokerSynonymDefault: "10485760", type: .int,
            documentation: "Accepted for compatibility; data lives in objects, not segments."),
        Entry(
            name: "segment.jitter.ms", kafkaDefault: "0", brokerSynonym: "log.roll.jitter.hours",
            brokerSynonymDefault: "0", type: .long,
            documentation: "Accepted for compatibility; data lives in objects, not segments."),
        Entry(
            name: "segment.ms", kafkaDefault: "604800000", brokerSynonym: "log.roll.hours",
            brokerSynonymDefault: "168", type: .long,
            documentation: "Accepted for compatibility; data lives in objects, not segments."),
        Entry(
            name: "unclean.leader.election.enable", kafkaDefault: "false",
            brokerSynonym: "unclean.leader.election.enable", brokerSynonymDefault: "false", type: .boolean,
            documentation: "Accepted for compatibility; a leader change in Floe never loses acknowledged data."),
    ]

    static let entriesByName: [String: Entry] = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })

    /// The names of every topic config Floe describes, in name order.
    public static var names: [String] { entries.map(\.name) }

    /// The broker-level value that applies to `key` when the topic does not set it, and whether it
    /// comes from the broker's own settings (STATIC_BROKER_CONFIG) rather than Kafka's default.
    static func brokerValue(of key: String, settings: BrokerSettings) -> (value: String, fromSettings: Bool)? {
        guard let entry = entriesByName[key] else { return nil }
        switch key {
        case "max.message.bytes":
            let value = String(settings.messageMaxBytes)
            return (value, value != entry.kafkaDefault)
        case "message.timestamp.type":
            return (settings.messageTimestampType, settings.messageTimestampType != entry.kafkaDefault)
        default:
            return (entry.kafkaDefault, false)
        }
    }

    /// The value of `key` for a topic with `configs`: its own setting, else the broker's, else Kafka's
    /// default. Nil for keys Floe does not know.
    public static func value(of key: String, in configs: [String: String], settings: BrokerSettings) -> String? {
        if let own = configs[key] { return own }
        return brokerValue(of: key, settings: settings)?.value
    }

    /// The largest record batch a topic with `configs` accepts (`max.message.bytes`).
    public static func maxMessageBytes(in configs: [String: String], settings: BrokerSettings) -> Int32 {
        value(of: "max.message.bytes", in: configs, settings: settings).flatMap { Int32($0) } ?? settings.messageMaxBytes
    }

    /// Whether a topic with `configs` stamps the broker's append time on batches (`message.timestamp.type`).
    public static func usesLogAppendTime(in configs: [String: String], settings: BrokerSettings) -> Bool {
        value(of: "message.timestamp.type", in: configs, settings: settings) == "LogAppendTime"
    }
}

/// Kafka's DescribeConfigs config sources.
enum ConfigSource: Int8 {
    case unknown = 0, topicConfig = 1, dynamicBrokerConfig = 2, dynamicDefaultBrokerConfig = 3
    case staticBrokerConfig = 4, defaultConfig = 5, dynamicBrokerLoggerConfig = 6
}

/// One topic config as Kafka describes it: value, source, and the synonyms in Kafka's precedence order.
struct DescribedTopicConfig {
    var name: String
    var value: String
    var source: ConfigSource
    var synonyms: [(name: String, value: String, source: ConfigSource)]
    var type: TopicDefaults.ConfigType
    var documentation: String

    /// Every known topic config of a topic with `configs`, in name order.
    static func all(configs: [String: String], settings: BrokerSettings) -> [DescribedTopicConfig] {
        TopicDefaults.entries.map { describe($0, configs: configs, settings: settings) }
    }

    static func describe(_ entry: TopicDefaults.Entry, configs: [String: String], settings: BrokerSettings) -> DescribedTopicConfig {
        var synonyms: [(name: String, value: String, source: ConfigSource)] = []
        if let own = configs[entry.name] { synonyms.append((entry.name, own, .topicConfig)) }
        if let broker = TopicDefaults.brokerValue(of: entry.name, settings: settings), broker.fromSettings {
            synonyms.append((entry.brokerSynonym, broker.value, .staticBrokerConfig))
        }
        synonyms.append((entry.brokerSynonym, entry.brokerSynonymDefault, .defaultConfig))
        let value = TopicDefaults.value(of: entry.name, in: configs, settings: settings) ?? entry.kafkaDefault
        return DescribedTopicConfig(
            name: entry.name, value: value, source: synonyms.first?.source ?? .defaultConfig, synonyms: synonyms,
            type: entry.type, documentation: entry.documentation)
    }
}
