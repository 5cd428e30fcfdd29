import KafkaProtocol
import NIOCore

/// A classic group's state, spelled as Kafka's ListGroups and DescribeGroups show it.
public enum GroupState: String, Sendable, Hashable, CaseIterable {
    case empty = "Empty"
    case preparingRebalance = "PreparingRebalance"
    case completingRebalance = "CompletingRebalance"
    case stable = "Stable"
    case dead = "Dead"
}

/// Coordinator limits, Kafka's broker settings of the same names.
public struct GroupConfig: Sendable, Hashable {
    /// `group.min.session.timeout.ms`.
    public var minSessionTimeoutMs: Int32 = 6_000
    /// `group.max.session.timeout.ms`.
    public var maxSessionTimeoutMs: Int32 = 1_800_000
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits for
    /// more members, so a group starting up gets one assignment instead of one per member.
    public var initialRebalanceDelayMs: Int64 = 3_000
    /// `offset.metadata.max.bytes`.
    public var maxOffsetMetadataBytes: Int = 4_096
    /// How long a new member awaiting its first join response is kept without heartbeats (Kafka's 5 minutes).
    public var newMemberJoinTimeoutMs: Int64 = 300_000
    /// `offsets.retention.minutes` (7 days) in milliseconds.
    public var offsetsRetentionMs: Int64 = 7 * 24 * 3_600_000
    /// `offsets.retention.check.interval.ms`.
    public var offsetsRetentionCheckIntervalMs: Int64 = 600_000
    /// `group.consumer.session.timeout.ms`: how long a consumer-protocol member lives without a heartbeat.
    public var consumerSessionTimeoutMs: Int32 = 45_000
    /// `group.consumer.heartbeat.interval.ms`: how often consumer-protocol members are told to heartbeat.
    public var consumerHeartbeatIntervalMs: Int32 = 5_000

    public init() {}
}

/// A protocol a member supports (an assignor name for consumers) with its opaque subscription bytes.
public struct GroupProtocol: Sendable, Hashable {
    public var name: String
    public var metadata: ByteBuffer

    public init(name: String, metadata: ByteBuffer) {
        self.name = name
        self.metadata = metadata
    }
}

/// One member of a classic group.
public struct GroupMember: Sendable, Hashable {
    public var memberId: String
    public var groupInstanceId: String?
    public var clientId: String
    public var clientHost: String
    public var rebalanceTimeoutMs: Int32
    public var sessionTimeoutMs: Int32
    public var protocolType: String
    /// In the member's order of preference.
    public var protocols: [GroupProtocol]
    /// What the leader assigned it in the current generation (empty before SyncGroup).
    public var assignment: ByteBuffer = ByteBuffer()
    /// The JoinGroup request waiting for the rebalance to complete.
    var joinToken: UInt64?
    /// The SyncGroup request waiting for the leader's assignment.
    var syncToken: UInt64?
    /// Joined during the current rebalance and not yet answered once.
    var isNew = false
    var latestHeartbeat: Int64 = 0
    var heartbeatDeadline: Int64 = 0

    /// The metadata of `protocol`, empty when the member does not support it.
    func metadata(for name: String?) -> ByteBuffer {
        protocols.first { $0.name == name }?.metadata ?? ByteBuffer()
    }
}

/// A committed offset of one partition.
public struct CommittedOffset: Sendable, Hashable {
    public var offset: Int64
    public var leaderEpoch: Int32
    public var metadata: String?
    public var commitTimestamp: Int64

    public init(offset: Int64, leaderEpoch: Int32, metadata: String?, commitTimestamp: Int64) {
        self.offset = offset
        self.leaderEpoch = leaderEpoch
        self.metadata = metadata
        self.commitTimestamp = commitTimestamp
    }
}

/// A topic partition a group committed an offset for.
public struct OffsetKey: Sendable, Hashable, Comparable {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public static func < (lhs: OffsetKey, rhs: OffsetKey) -> Bool { (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition) }
}

/// What a JoinGroup request gets back.
public struct JoinOutcome: Sendable, Hashable {
    /// One member as the leader sees it in its JoinGroup answer.
    public struct Member: Sendable, Hashable {
        public var memberId: String
        /// Set for static members (`group.instance.id`).
        public var groupInstanceId: String?
        /// The member's subscription for the chosen protocol, for the leader's assignor.
        public var metadata: ByteBuffer
    }

    public var error: KafkaErrorCode
    public var generationId: Int32 = -1
    public var protocolType: String?
    public var protocolName: String?
    public var leaderId: String = ""
    public var memberId: String = ""
    public var skipAssignment = false
    /// Every member's metadata for the chosen protocol, for the leader only.
    public var members: [Member] = []

    public init(error: KafkaErrorCode, memberId: String = "") {
        self.error = error
        self.memberId = memberId
    }
}

/// What a SyncGroup request gets back.
public struct SyncOutcome: Sendable, Hashable {
    public var error: KafkaErrorCode
    public var protocolType: String?
    public var protocolName: String?
    public var assignment: ByteBuffer = ByteBuffer()

    public init(error: KafkaErrorCode) { self.error = error }
}

/// A JoinGroup request as the state machine sees it.
public struct JoinInput: Sendable, Hashable {
    public var memberId: String
    public var groupInstanceId: String?
    public var clientId: String
    public var clientHost: String
    public var sessionTimeoutMs: Int32
    public var rebalanceTimeoutMs: Int32
    public var protocolType: String
    public var protocols: [GroupProtocol]
    /// JoinGroup v4+: an unknown member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    public var requireKnownMemberId: Bool
    /// JoinGroup v9+: a static leader rejoining a stable group is told to skip the assignment.
    public var supportsSkipAssignment: Bool

    public init(
        memberId: String, groupInstanceId: String? = nil, clientId: String = "client", clientHost: String = "/127.0.0.1",
        sessionTimeoutMs: Int32, rebalanceTimeoutMs: Int32, protocolType: String, protocols: [GroupProtocol],
        requireKnownMemberId: Bool, supportsSkipAssignment: Bool = false
    ) {
        self.memberId = memberId
        self.groupInstanceId = groupInstanceId
        self.clientId = clientId
        self.clientHost = clientHost
        self.sessionTimeoutMs = sessionTimeoutMs
        self.rebalanceTimeoutMs = rebalanceTimeoutMs
        self.protocolType = protocolType
        self.protocols = protocols
        self.requireKnownMemberId = requireKnownMemberId
        self.supportsSkipAssignment = supportsSkipAssignment
    }
}

/// Why the group's metadata must be written to `__consumer_offsets`; the driver reports the write's
/// outcome back with `ClassicGroup.stored(_:success:now:)`.
public enum StoreReason: Sendable, Hashable {
    /// The leader's assignment of `generation`: members get it once it is durable.
    case assignment(generation: Int32)
    /// A static member replaced its old member id in a stable group; it gets `outcome` once durable.
    case staticRejoin(token: UInt64, outcome: JoinOutcome)
    /// A rebalance ended with no members: the new, empty generation.
    case emptyGeneration(generation: Int32)
}

/// What the driver must do after a step.
public enum GroupAction: Sendable, Hashable {
    case joinResponse(token: UInt64, JoinOutcome)
    case syncResponse(token: UInt64, SyncOutcome)
    case store(StoreReason)
}
