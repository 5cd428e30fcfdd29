import KafkaProtocol

/// One partition, named by topic id as the consumer protocol names them.
public struct TopicIdPartition: Sendable, Hashable, Comparable {
    public var topicId: KafkaUUID
    public var partition: Int32

    public init(topicId: KafkaUUID, partition: Int32) {
        self.topicId = topicId
        self.partition = partition
    }

    public static func < (lhs: TopicIdPartition, rhs: TopicIdPartition) -> Bool {
        (lhs.topicId.high, lhs.topicId.low, lhs.partition) < (rhs.topicId.high, rhs.topicId.low, rhs.partition)
    }
}

/// Set operations on assignments (topic id → partitions) that keep them normalised: no topic with
/// an empty partition set, so two equal assignments compare equal.
enum Assignments {
    static func normalized(_ assignment: MemberAssignment) -> MemberAssignment {
        assignment.filter { !$0.value.isEmpty }
    }

    static func partitions(_ assignment: MemberAssignment) -> [TopicIdPartition] {
        var out: [TopicIdPartition] = []
        for (topic, partitions) in assignment {
            for partition in partitions { out.append(TopicIdPartition(topicId: topic, partition: partition)) }
        }
        return out.sorted()
    }

    static func make(_ partitions: some Sequence<TopicIdPartition>) -> MemberAssignment {
        var out: MemberAssignment = [:]
        for item in partitions { out[item.topicId, default: []].insert(item.partition) }
        return out
    }

    static func intersection(_ lhs: MemberAssignment, _ rhs: MemberAssignment) -> MemberAssignment {
        normalized(Dictionary(uniqueKeysWithValues: lhs.map { ($0.key, $0.value.intersection(rhs[$0.key] ?? [])) }))
    }

    static func subtracting(_ lhs: MemberAssignment, _ rhs: MemberAssignment) -> MemberAssignment {
        normalized(Dictionary(uniqueKeysWithValues: lhs.map { ($0.key, $0.value.subtracting(rhs[$0.key] ?? [])) }))
    }

    static func union(_ lhs: MemberAssignment, _ rhs: MemberAssignment) -> MemberAssignment {
        normalized(lhs.merging(rhs) { $0.union($1) })
    }

    static func contains(_ assignment: MemberAssignment, _ item: TopicIdPartition) -> Bool {
        assignment[item.topicId]?.contains(item.partition) ?? false
    }

    static func isSubset(_ lhs: MemberAssignment, of rhs: MemberAssignment) -> Bool {
        lhs.allSatisfy { $0.value.isSubset(of: rhs[$0.key] ?? []) }
    }

    static func count(_ assignment: MemberAssignment) -> Int {
        assignment.values.reduce(0) { $0 + $1.count }
    }
}

/// The cluster's topics as the consumer protocol sees them at one metadata version: subscriptions
/// by name and by regular expression resolve against it.
public struct TopicCatalog: Sendable {
    public struct Topic: Sendable, Hashable {
        public var name: String
        public var id: KafkaUUID
        public var partitionCount: Int32

        public init(name: String, id: KafkaUUID, partitionCount: Int32) {
            self.name = name
            self.id = id
            self.partitionCount = partitionCount
        }
    }

    /// The metadata version (the controller's applied index) it was built from.
    public var version: UInt64
    public private(set) var byName: [String: Topic] = [:]
    public private(set) var byId: [KafkaUUID: Topic] = [:]
    /// Names of the topics a regular expression may match (internal topics excluded), sorted.
    public private(set) var matchableNames: [String] = []

    public init(version: UInt64, topics: [Topic], internalNames: Set<String> = []) {
        self.version = version
        for topic in topics {
            byName[topic.name] = topic
            byId[topic.id] = topic
        }
        matchableNames = topics.map(\.name).filter { !internalNames.contains($0) }.sorted()
    }
}

/// One member of a consumer group (KIP-848).
public struct ConsumerGroupMember: Sendable, Hashable {
    /// Where the member is in reconciling towards its target assignment.
    public enum State: Int8, Sendable, Hashable {
        /// It has its target assignment at the group's assignment epoch, or waits for nothing.
        case stable = 0
        /// It must give up `pendingRevocation` before it moves to the new epoch.
        case unrevokedPartitions = 1
        /// It is at the new epoch but some target partitions are still held by other members.
        case unreleasedPartitions = 2
    }

    public var memberId: String
    public var instanceId: String?
    public var rackId: String?
    public var clientId: String
    public var clientHost: String
    public var rebalanceTimeoutMs: Int32
    /// Sorted, without duplicates.
    public var subscribedTopicNames: [String]
    public var subscribedTopicRegex: String?
    public var serverAssignor: String?
    /// -2 while a static member is away (it left saying it will rejoin).
    public var memberEpoch: Int32
    public var previousMemberEpoch: Int32
    public var state: State
    /// What the member owns and is told it owns.
    public var assigned: MemberAssignment
    /// What it still owns but must revoke.
    public var pendingRevocation: MemberAssignment
    /// Set for a member that speaks the classic protocol (JoinGroup, SyncGroup, Heartbeat) inside
    /// this group: a classic group converted online, or a classic member that joined it later.
    public var classic: ClassicProtocol?
    /// Session and revocation deadlines (ms): not stored, restarted when a coordinator loads the group.
    var sessionDeadline: Int64 = 0
    var revocationDeadline: Int64?

    public init(
        memberId: String, instanceId: String? = nil, rackId: String? = nil, clientId: String = "", clientHost: String = "",
        rebalanceTimeoutMs: Int32 = 300_000, subscribedTopicNames: [String] = [], subscribedTopicRegex: String? = nil,
        serverAssignor: String? = nil, memberEpoch: Int32 = 0, previousMemberEpoch: Int32 = -1, state: State = .stable,
        assigned: MemberAssignment = [:], pendingRevocation: MemberAssignment = [:]
    ) {
        self.memberId = memberId
        self.instanceId = instanceId
        self.rackId = rackId
        self.clientId = clientId
        self.clientHost = clientHost
        self.rebalanceTimeoutMs = rebalanceTimeoutMs
        self.subscribedTopicNames = subscribedTopicNames
        self.subscribedTopicRegex = subscribedTopicRegex
        self.serverAssignor = serverAssignor
        self.memberEpoch = memberEpoch
        self.previousMemberEpoch = previousMemberEpoch
        self.state = state
        self.assigned = assigned
        self.pendingRevocation = pendingRevocation
    }

    /// What a classic member told JoinGroup: its session timeout and protocols (assignor names with subscriptions).
    public struct ClassicProtocol: Sendable, Hashable {
        public var sessionTimeoutMs: Int32
        public var protocols: [GroupProtocol]

        public init(sessionTimeoutMs: Int32, protocols: [GroupProtocol]) {
            self.sessionTimeoutMs = sessionTimeoutMs
            self.protocols = protocols
        }
    }

    /// How long this member lives without a heartbeat.
    func sessionTimeoutMs(_ config: GroupConfig) -> Int64 {
        Int64(classic?.sessionTimeoutMs ?? config.consumerSessionTimeoutMs)
    }

    /// The member without its timers: what is stored.
    var persisted: ConsumerGroupMember {
        var copy = self
        copy.sessionDeadline = 0
        copy.revocationDeadline = nil
        return copy
    }
}

/// A ConsumerGroupHeartbeat as the state machine sees it; nil fields did not change since the last one.
public struct ConsumerHeartbeat: Sendable, Hashable {
    public var memberId: String
    public var memberEpoch: Int32
    public var instanceId: String?
    public var rackId: String?
    public var rebalanceTimeoutMs: Int32
    public var subscribedTopicNames: [String]?
    public var subscribedTopicRegex: String?
    public var serverAssignor: String?
    /// What the member owns now, when it says.
    public var ownedPartitions: [TopicIdPartition]?
    public var clientId: String
    public var clientHost: String

    public init(
        memberId: String, memberEpoch: Int32, instanceId: String? = nil, rackId: String? = nil, rebalanceTimeoutMs: Int32 = -1,
        subscribedTopicNames: [String]? = nil, subscribedTopicRegex: String? = nil, serverAssignor: String? = nil,
        ownedPartitions: [TopicIdPartition]? = nil, clientId: String = "", clientHost: String = ""
    ) {
        self.memberId = memberId
        self.memberEpoch = memberEpoch
        self.instanceId = instanceId
        self.rackId = rackId
        self.rebalanceTimeoutMs = rebalanceTimeoutMs
        self.subscribedTopicNames = subscribedTopicNames
        self.subscribedTopicRegex = subscribedTopicRegex
        self.serverAssignor = serverAssignor
        self.ownedPartitions = ownedPartitions
        self.clientId = clientId
        self.clientHost = clientHost
    }
}

/// What a ConsumerGroupHeartbeat gets back.
public struct ConsumerHeartbeatOutcome: Sendable, Hashable {
    public var error: KafkaErrorCode
    public var message: String?
    public var memberId: String?
    public var memberEpoch: Int32 = 0
    public var heartbeatIntervalMs: Int32 = 0
    /// The member's whole assignment, when it changed or the member needs it again.
    public var assignment: MemberAssignment?

    public init(error: KafkaErrorCode, message: String? = nil, memberId: String? = nil) {
        self.error = error
        self.message = message
        self.memberId = memberId
    }
}
