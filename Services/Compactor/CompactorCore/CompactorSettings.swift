import ClusterMetadata

/// What a compactor does each pass and when; every field has a flag of `floe-compactor`.
public struct CompactorSettings: Sendable, Hashable {
    /// Target size of a stream object: splits cut outputs at about this size, merges stop growing at it.
    public var streamObjectBytes: Int
    /// A run of smaller stream objects of one stream is merged once it has this many members (or reaches the target size).
    public var mergeMinObjects: Int
    /// Upper bound on the source bytes one split reads (at least one object is always taken).
    public var maxPassBytes: Int
    /// How long a destroyed object stays in the store for readers that hold older metadata.
    public var deleteGraceMillis: Millis
    /// Deadline of a prepared output: an abandoned one becomes garbage after this.
    public var prepareLifetimeMillis: Millis
    /// How often the store is listed for objects that no metadata references.
    public var orphanScanIntervalMillis: Millis
    /// How often retention is applied, like Kafka's `log.retention.check.interval.ms`; the first
    /// check comes one interval after start (0: every pass, from the first).
    public var retentionCheckIntervalMillis: Millis
    /// Cluster default of `retention.ms` for topics that do not set it (-1: keep forever).
    public var defaultRetentionMillis: Int64
    /// Cluster default of `retention.bytes` for topics that do not set it (-1: no size limit).
    public var defaultRetentionBytes: Int64

    public init(
        streamObjectBytes: Int = 32 << 20, mergeMinObjects: Int = 4, maxPassBytes: Int = 128 << 20,
        deleteGraceMillis: Millis = 60_000, prepareLifetimeMillis: Millis = 300_000, orphanScanIntervalMillis: Millis = 300_000,
        retentionCheckIntervalMillis: Millis = 300_000, defaultRetentionMillis: Int64 = 604_800_000, defaultRetentionBytes: Int64 = -1
    ) {
        self.retentionCheckIntervalMillis = retentionCheckIntervalMillis
        self.streamObjectBytes = streamObjectBytes
        self.mergeMinObjects = mergeMinObjects
        self.maxPassBytes = maxPassBytes
        self.deleteGraceMillis = deleteGraceMillis
        self.prepareLifetimeMillis = prepareLifetimeMillis
        self.orphanScanIntervalMillis = orphanScanIntervalMillis
        self.defaultRetentionMillis = defaultRetentionMillis
        self.defaultRetentionBytes = defaultRetentionBytes
    }
}

/// A topic's deletion rules, from its configs and the cluster defaults.
public struct RetentionPolicy: Sendable, Hashable {
    /// Whether `cleanup.policy` includes `delete`; compact-only topics keep every offset's latest key.
    public var deletes: Bool
    /// Records whose batch is older than this are deleted; -1 keeps them.
    public var retentionMillis: Int64
    /// The oldest blocks are deleted while the rest still holds this many bytes; -1 keeps them.
    public var retentionBytes: Int64

    public init(deletes: Bool, retentionMillis: Int64, retentionBytes: Int64) {
        self.deletes = deletes
        self.retentionMillis = retentionMillis
        self.retentionBytes = retentionBytes
    }

    public init(configs: [String: String], settings: CompactorSettings) {
        deletes = TopicConfig.cleanupPolicies(configs).contains("delete")
        retentionMillis = configs["retention.ms"].flatMap { Int64($0) } ?? settings.defaultRetentionMillis
        retentionBytes = configs["retention.bytes"].flatMap { Int64($0) } ?? settings.defaultRetentionBytes
    }

    /// Whether anything can ever be deleted under this policy.
    public var limitsSomething: Bool { deletes && (retentionMillis >= 0 || retentionBytes >= 0) }
}
