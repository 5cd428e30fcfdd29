import ClusterMetadata

/// A broker's own configuration: identity plus the Kafka broker configs clients can see through
/// DescribeConfigs (resource type BROKER) and that shape its answers.
public struct BrokerSettings: Sendable, Hashable {
    /// Kafka broker id (= Floe node id).
    public var nodeId: NodeID
    /// Zone label (Kafka's `broker.rack`).
    public var zone: String
    /// `host:port` clients connect to, as shown in Metadata.
    public var advertisedHost: String
    public var advertisedPort: Int32
    /// The id every broker reports in Metadata and DescribeCluster.
    public var clusterId: String
    /// `num.partitions`: partitions of a topic created with -1 or by auto-creation.
    public var defaultPartitions: Int32
    /// `auto.create.topics.enable`.
    public var autoCreateTopics: Bool
    /// `message.max.bytes`: the largest record batch a topic accepts unless it sets `max.message.bytes`.
    public var messageMaxBytes: Int32
    /// `log.message.timestamp.type` default for topics that do not set `message.timestamp.type`.
    public var messageTimestampType: String
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions kept (KIP-227); 0 keeps none.
    public var maxIncrementalFetchSessionCacheSlots: Int
    /// Partitions all fetch sessions together may hold (with the slots, what bounds their memory).
    public var maxIncrementalFetchSessionCachePartitions: Int
    /// How long a fetch session must have been idle before any new session may evict it.
    public var minIncrementalFetchSessionEvictionMs: Int64
    /// Zone routing (DESIGN §6): Metadata shows each client its own zone's brokers, produces for partitions
    /// led from other zones go through routed objects, and their committed data is served here.
    public var zoneRouting = false
    /// How long a routed object's id stays prepared; an object never claimed is garbage after it.
    public var routedObjectLifetimeMs: Int64 = 300_000
    /// How long a routing broker collects produces for other zones into one routed object.
    public var routedLingerMs: Int64 = 2

    public init(
        nodeId: NodeID, zone: String, advertisedHost: String, advertisedPort: Int32, clusterId: String = "floe-cluster",
        defaultPartitions: Int32 = 1, autoCreateTopics: Bool = true, messageMaxBytes: Int32 = 1_048_588,
        messageTimestampType: String = "CreateTime", maxIncrementalFetchSessionCacheSlots: Int = 1_000,
        maxIncrementalFetchSessionCachePartitions: Int = 100_000, minIncrementalFetchSessionEvictionMs: Int64 = 120_000
    ) {
        self.nodeId = nodeId
        self.zone = zone
        self.advertisedHost = advertisedHost
        self.advertisedPort = advertisedPort
        self.clusterId = clusterId
        self.defaultPartitions = defaultPartitions
        self.autoCreateTopics = autoCreateTopics
        self.messageMaxBytes = messageMaxBytes
        self.messageTimestampType = messageTimestampType
        self.maxIncrementalFetchSessionCacheSlots = maxIncrementalFetchSessionCacheSlots
        self.maxIncrementalFetchSessionCachePartitions = maxIncrementalFetchSessionCachePartitions
        self.minIncrementalFetchSessionEvictionMs = minIncrementalFetchSessionEvictionMs
    }

    /// The broker configs DescribeConfigs(BROKER) reports, by Kafka name, with their current values.
    public var describedConfigs: [(name: String, value: String)] {
        [
            ("broker.id", String(nodeId)),
            ("broker.rack", zone),
            ("num.partitions", String(defaultPartitions)),
            ("default.replication.factor", "1"),
            ("auto.create.topics.enable", String(autoCreateTopics)),
            ("message.max.bytes", String(messageMaxBytes)),
            ("log.message.timestamp.type", messageTimestampType),
            ("offsets.topic.num.partitions", "50"),
            ("offsets.topic.replication.factor", "1"),
            ("min.insync.replicas", "1"),
            ("max.incremental.fetch.session.cache.slots", String(maxIncrementalFetchSessionCacheSlots)),
            ("floe.zone.routing", String(zoneRouting)),
            ("advertised.listeners", "PLAINTEXT://\(advertisedHost):\(advertisedPort)"),
        ]
    }
}
