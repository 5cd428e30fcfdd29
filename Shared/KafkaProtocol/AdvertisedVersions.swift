/// Which api keys and version ranges a Floe server advertises in ApiVersions, and which it really parses.
public struct AdvertisedVersions: Sendable, Hashable {
    /// One api key's advertised range and the lowest version actually implemented.
    public struct Entry: Sendable, Hashable {
        /// The api this entry is for.
        public var apiKey: ApiKey
        /// What goes into the ApiVersions response.
        public var advertised: ClosedRange<Int16>
        /// Versions below this are advertised for client feature probes but rejected when sent.
        public var implementedMinimum: Int16

        /// An entry advertising `advertised`; `implementedMinimum` defaults to its lower bound.
        public init(_ apiKey: ApiKey, _ advertised: ClosedRange<Int16>, implementedMinimum: Int16? = nil) {
            self.apiKey = apiKey
            self.advertised = advertised
            self.implementedMinimum = implementedMinimum ?? advertised.lowerBound
        }

        /// The versions the server parses and answers.
        public var implemented: ClosedRange<Int16>? {
            implementedMinimum <= advertised.upperBound ? Swift.max(implementedMinimum, advertised.lowerBound)...advertised.upperBound : nil
        }
    }

    /// Entries sorted by api key, at most one per key.
    public let entries: [Entry]

    /// Builds a table; later entries for the same key replace earlier ones.
    public init(_ entries: [Entry]) {
        var byKey: [Int16: Entry] = [:]
        for entry in entries { byKey[entry.apiKey.rawValue] = entry }
        self.entries = byKey.keys.sorted().compactMap { byKey[$0] }
    }

    /// The full target profile: what the clients in the protocol notes need (producers, idempotent and
    /// transactional producers, classic and KIP-848 consumers, admin).
    public static let floe = AdvertisedVersions([
        Entry(.apiVersions, 0...4),
        Entry(.metadata, 0...12),
        // librdkafka (<= 2.11.0) enables gzip/snappy/lz4 only if Produce v0 is advertised; v0-2 bodies are rejected.
        Entry(.produce, 0...9, implementedMinimum: 3),
        Entry(.fetch, 4...12),
        Entry(.listOffsets, 1...7),
        Entry(.offsetForLeaderEpoch, 2...4),
        Entry(.findCoordinator, 0...4),
        Entry(.joinGroup, 0...9),
        Entry(.syncGroup, 0...5),
        Entry(.heartbeat, 0...4),
        Entry(.leaveGroup, 0...5),
        Entry(.offsetCommit, 2...9),
        Entry(.offsetFetch, 1...9),
        Entry(.consumerGroupHeartbeat, 0...1),
        Entry(.consumerGroupDescribe, 0...0),
        Entry(.initProducerId, 0...4),
        Entry(.addPartitionsToTxn, 0...3),
        Entry(.addOffsetsToTxn, 0...3),
        Entry(.endTxn, 0...3),
        Entry(.txnOffsetCommit, 0...3),
        Entry(.saslHandshake, 0...1),
        Entry(.saslAuthenticate, 0...2),
        Entry(.createTopics, 2...7),
        Entry(.deleteTopics, 1...6),
        Entry(.createPartitions, 0...3),
        Entry(.describeConfigs, 1...4),
        Entry(.alterConfigs, 0...2),
        Entry(.incrementalAlterConfigs, 0...1),
        Entry(.describeCluster, 0...1),
        Entry(.listGroups, 0...5),
        Entry(.describeGroups, 0...5),
        Entry(.deleteGroups, 0...2),
        Entry(.offsetDelete, 0...0),
        Entry(.deleteRecords, 0...2),
    ])

    /// The same table limited to `keys` (what a server has handlers for). ApiVersions is always kept:
    /// a server must always be able to answer it.
    public func restricted(to keys: Set<ApiKey>) -> AdvertisedVersions {
        AdvertisedVersions(entries.filter { keys.contains($0.apiKey) || $0.apiKey == .apiVersions })
    }

    /// The entry for `key`, if advertised.
    public func entry(for key: ApiKey) -> Entry? {
        entries.first { $0.apiKey == key }
    }

    /// The advertised range for `key`, if any.
    public func range(for key: ApiKey) -> ClosedRange<Int16>? {
        entry(for: key)?.advertised
    }

    /// Whether requests of `key` at `version` are parsed and answered (advertised and at or above the
    /// implemented minimum).
    public func isSupported(_ key: ApiKey, _ version: Int16) -> Bool {
        guard let implemented = entry(for: key)?.implemented else { return false }
        return implemented.contains(version)
    }

    /// The request header version of `apiKey` at `version` for a server serving this table; nil for a pair it
    /// does not implement. ApiVersions resolves at every version, as Kafka requires: a request newer than any
    /// schema has the newest schema's header, so the server can still answer it.
    public func requestHeaderVersion(apiKey: Int16, version: Int16) -> Int16? {
        guard let key = ApiKey(rawValue: apiKey) else { return nil }
        if key == .apiVersions {
            return key.requestHeaderVersion(Swift.min(Swift.max(version, key.validVersions.lowerBound), key.validVersions.upperBound))
        }
        guard isSupported(key, version) else { return nil }
        return key.requestHeaderVersion(version)
    }
}
