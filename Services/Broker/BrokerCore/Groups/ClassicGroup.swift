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
    public struct Member: Sendable, Hashable {
        public var memberId: String
        public var groupInstanceId: String?
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

/// One classic group (Kafka's classic rebalance protocol), a deterministic state machine: every step
/// takes the time explicitly and returns the responses to deliver and the writes to make. Members
/// are kept in join order so every step is reproducible.
public struct ClassicGroup: Sendable {
    public let groupId: String
    public let config: GroupConfig
    public private(set) var state: GroupState = .empty
    public private(set) var protocolType: String?
    public private(set) var protocolName: String?
    public private(set) var generationId: Int32 = 0
    public private(set) var leaderId: String?
    public private(set) var members: [GroupMember] = []
    /// When the state last changed (ms).
    public private(set) var stateTimestamp: Int64
    /// Committed offsets.
    public internal(set) var offsets: [OffsetKey: CommittedOffset] = [:]
    /// Where each offset's record sits in `__consumer_offsets`: a late-completing write of an older
    /// record must not overwrite a newer one.
    var offsetPositions: [OffsetKey: Int64] = [:]
    var staticMembers: [String: String] = [:]
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire unless used.
    var pendingMembers: [String: Int64] = [:]
    var newMemberAdded = false
    var joinDeadline: Int64?
    var initialDelayActive = false
    var initialDelayRemaining: Int64 = 0

    public init(groupId: String, config: GroupConfig = GroupConfig(), now: Int64) {
        self.groupId = groupId
        self.config = config
        self.stateTimestamp = now
    }

    // MARK: Queries

    public func member(_ memberId: String) -> GroupMember? { members.first { $0.memberId == memberId } }

    func memberIndex(_ memberId: String) -> Int? { members.firstIndex { $0.memberId == memberId } }

    public func isLeader(_ memberId: String) -> Bool { leaderId == memberId }

    /// Member ids waiting for their MEMBER_ID_REQUIRED rejoin, sorted.
    public var pendingMemberIds: [String] { pendingMembers.keys.sorted() }

    /// The group has nothing worth keeping: no members, no offsets.
    public var isForgettable: Bool { state == .empty && members.isEmpty && offsets.isEmpty && pendingMembers.isEmpty }

    /// Member ids whose instance id maps elsewhere, or a member id claiming someone else's instance id.
    func isStaticMemberFenced(memberId: String, instanceId: String?) -> Bool {
        guard let instanceId, let mapped = staticMembers[instanceId] else { return false }
        return mapped != memberId
    }

    /// Topics the members of a consumer group subscribe to, from their subscriptions for the chosen
    /// protocol (OffsetDelete refuses to delete those). Unparseable subscriptions count as none.
    public var subscribedTopics: Set<String> {
        guard protocolType == "consumer", let protocolName else { return [] }
        var topics: Set<String> = []
        for member in members {
            var bytes = member.metadata(for: protocolName)
            guard let version: Int16 = try? bytes.readKafkaInteger(),
                  let subscription = try? ConsumerProtocolSubscription(from: &bytes, version: min(max(version, 0), 3)) else { continue }
            topics.formUnion(subscription.topics)
        }
        return topics
    }

    // MARK: JoinGroup

    /// A JoinGroup request. `newMemberId` is the id to hand out if the request has none (the driver
    /// makes it, so the state machine needs no randomness).
    public mutating func join(_ input: JoinInput, token: UInt64, newMemberId: String, now: Int64) -> [GroupAction] {
        func fail(_ code: KafkaErrorCode) -> [GroupAction] {
            [.joinResponse(token: token, JoinOutcome(error: code, memberId: input.memberId))]
        }
        guard input.sessionTimeoutMs >= config.minSessionTimeoutMs, input.sessionTimeoutMs <= config.maxSessionTimeoutMs else {
            return fail(.invalidSessionTimeout)
        }
        guard state != .dead else { return fail(.coordinatorNotAvailable) }
        guard supportsProtocols(input.protocolType, input.protocols) else { return fail(.inconsistentGroupProtocol) }

        if input.memberId.isEmpty {
            if let instanceId = input.groupInstanceId {
                if let oldMemberId = staticMembers[instanceId] {
                    return replaceStaticMember(instanceId: instanceId, oldMemberId: oldMemberId, newMemberId: newMemberId, input, token: token, now: now)
                }
                return addMemberAndRebalance(newMemberId, input, token: token, now: now)
            }
            if input.requireKnownMemberId {
                pendingMembers[newMemberId] = now + Int64(input.sessionTimeoutMs)
                return [.joinResponse(token: token, JoinOutcome(error: .memberIdRequired, memberId: newMemberId))]
            }
            return addMemberAndRebalance(newMemberId, input, token: token, now: now)
        }

        if pendingMembers.removeValue(forKey: input.memberId) != nil {
            return addMemberAndRebalance(input.memberId, input, token: token, now: now)
        }
        if isStaticMemberFenced(memberId: input.memberId, instanceId: input.groupInstanceId) { return fail(.fencedInstanceId) }
        guard let index = memberIndex(input.memberId) else { return fail(.unknownMemberId) }
        switch state {
        case .preparingRebalance:
            return updateMemberAndRebalance(index, input, token: token, now: now)
        case .completingRebalance:
            if members[index].protocols == input.protocols {
                // The member lost its join response: send the current generation again.
                heartbeat(index, now: now)
                return [.joinResponse(token: token, currentJoinOutcome(for: input.memberId, includeMembers: isLeader(input.memberId)))]
            }
            return updateMemberAndRebalance(index, input, token: token, now: now)
        case .stable:
            if isLeader(input.memberId) || members[index].protocols != input.protocols {
                return updateMemberAndRebalance(index, input, token: token, now: now)
            }
            heartbeat(index, now: now)
            return [.joinResponse(token: token, currentJoinOutcome(for: input.memberId, includeMembers: false))]
        case .empty, .dead:
            return fail(.unknownMemberId)
        }
    }

    func supportsProtocols(_ type: String, _ protocols: [GroupProtocol]) -> Bool {
        if state == .empty || members.isEmpty { return !type.isEmpty && !protocols.isEmpty }
        guard protocolType == type else { return false }
        return protocols.contains { candidate in members.allSatisfy { member in member.protocols.contains { $0.name == candidate.name } } }
    }

    func currentJoinOutcome(for memberId: String, includeMembers: Bool) -> JoinOutcome {
        var outcome = JoinOutcome(error: .none, memberId: memberId)
        outcome.generationId = generationId
        outcome.protocolType = protocolType
        outcome.protocolName = protocolName
        outcome.leaderId = leaderId ?? ""
        if includeMembers { outcome.members = currentMemberMetadata() }
        return outcome
    }

    func currentMemberMetadata() -> [JoinOutcome.Member] {
        members.map { JoinOutcome.Member(memberId: $0.memberId, groupInstanceId: $0.groupInstanceId, metadata: $0.metadata(for: protocolName)) }
    }

    mutating func heartbeat(_ index: Int, now: Int64) {
        members[index].latestHeartbeat = now
        members[index].heartbeatDeadline = now + Int64(members[index].sessionTimeoutMs)
    }

    mutating func addMemberAndRebalance(_ memberId: String, _ input: JoinInput, token: UInt64, now: Int64) -> [GroupAction] {
        var member = GroupMember(
            memberId: memberId, groupInstanceId: input.groupInstanceId, clientId: input.clientId, clientHost: input.clientHost,
            rebalanceTimeoutMs: input.rebalanceTimeoutMs, sessionTimeoutMs: input.sessionTimeoutMs, protocolType: input.protocolType,
            protocols: input.protocols)
        member.joinToken = token
        member.isNew = true
        member.latestHeartbeat = now
        member.heartbeatDeadline = now + Int64(input.sessionTimeoutMs)
        if state == .preparingRebalance && generationId == 0 { newMemberAdded = true }
        if members.isEmpty { protocolType = input.protocolType }
        if leaderId == nil { leaderId = memberId }
        if let instanceId = input.groupInstanceId { staticMembers[instanceId] = memberId }
        members.append(member)
        var actions = maybePrepareRebalance(now: now)
        actions += tryCompleteJoin(now: now)
        return actions
    }

    mutating func updateMemberAndRebalance(_ index: Int, _ input: JoinInput, token: UInt64, now: Int64) -> [GroupAction] {
        var actions: [GroupAction] = []
        if let previous = members[index].joinToken {
            // A second join from the same member replaces the first, which is answered now.
            actions.append(.joinResponse(token: previous, JoinOutcome(error: .rebalanceInProgress, memberId: input.memberId)))
        }
        members[index].protocols = input.protocols
        members[index].rebalanceTimeoutMs = input.rebalanceTimeoutMs
        members[index].sessionTimeoutMs = input.sessionTimeoutMs
        members[index].clientId = input.clientId
        members[index].clientHost = input.clientHost
        members[index].joinToken = token
        heartbeat(index, now: now)
        actions += maybePrepareRebalance(now: now)
        actions += tryCompleteJoin(now: now)
        return actions
    }

    /// KIP-345: a static member restarting under the same instance id takes over its old member id's
    /// place; a stable group whose chosen protocol does not change keeps its assignment.
    mutating func replaceStaticMember(
        instanceId: String, oldMemberId: String, newMemberId: String, _ input: JoinInput, token: UInt64, now: Int64
    ) -> [GroupAction] {
        guard let index = memberIndex(oldMemberId) else {
            staticMembers[instanceId] = nil
            return addMemberAndRebalance(newMemberId, input, token: token, now: now)
        }
        let previousLeader = leaderId
        var actions: [GroupAction] = []
        if let previous = members[index].joinToken {
            actions.append(.joinResponse(token: previous, JoinOutcome(error: .fencedInstanceId, memberId: oldMemberId)))
            members[index].joinToken = nil
        }
        if let previous = members[index].syncToken {
            actions.append(.syncResponse(token: previous, SyncOutcome(error: .fencedInstanceId)))
            members[index].syncToken = nil
        }
        members[index].memberId = newMemberId
        staticMembers[instanceId] = newMemberId
        if leaderId == oldMemberId { leaderId = newMemberId }
        members[index].rebalanceTimeoutMs = input.rebalanceTimeoutMs
        members[index].sessionTimeoutMs = input.sessionTimeoutMs
        members[index].clientId = input.clientId
        members[index].clientHost = input.clientHost
        heartbeat(index, now: now)
        switch state {
        case .stable:
            members[index].protocols = input.protocols
            guard selectProtocol() == protocolName else {
                // The chosen protocol would change: the group must rebalance to stay consistent.
                members[index].joinToken = token
                return actions + maybePrepareRebalance(now: now) + tryCompleteJoin(now: now)
            }
            let isLeader = isLeader(newMemberId)
            var outcome = currentJoinOutcome(for: newMemberId, includeMembers: false)
            if input.supportsSkipAssignment && isLeader {
                outcome.skipAssignment = true
                outcome.members = currentMemberMetadata()
            } else {
                // Before v9 the old leader id keeps a restarted leader from assigning (a stable group
                // would not hand its new assignment out).
                outcome.leaderId = previousLeader ?? ""
            }
            return actions + [.store(.staticRejoin(token: token, outcome: outcome))]
        case .completingRebalance:
            // The leader may already be assigning to the old member id: start over.
            members[index].protocols = input.protocols
            members[index].joinToken = token
            return actions + prepareRebalance(now: now) + tryCompleteJoin(now: now)
        case .preparingRebalance:
            members[index].protocols = input.protocols
            members[index].joinToken = token
            return actions + tryCompleteJoin(now: now)
        case .empty, .dead:
            return actions + [.joinResponse(token: token, JoinOutcome(error: .unknownMemberId, memberId: input.memberId))]
        }
    }

    mutating func maybePrepareRebalance(now: Int64) -> [GroupAction] {
        switch state {
        case .stable, .completingRebalance, .empty: return prepareRebalance(now: now)
        case .preparingRebalance, .dead: return []
        }
    }

    mutating func prepareRebalance(now: Int64) -> [GroupAction] {
        var actions: [GroupAction] = []
        if state == .completingRebalance {
            for index in members.indices {
                members[index].assignment = ByteBuffer()
                if let token = members[index].syncToken {
                    actions.append(.syncResponse(token: token, SyncOutcome(error: .rebalanceInProgress)))
                    members[index].syncToken = nil
                }
            }
        }
        let rebalanceTimeout = Int64(members.map(\.rebalanceTimeoutMs).max() ?? 0)
        if state == .empty && config.initialRebalanceDelayMs > 0 {
            initialDelayActive = true
            newMemberAdded = false
            let delay = min(config.initialRebalanceDelayMs, max(rebalanceTimeout, 0))
            joinDeadline = now + delay
            initialDelayRemaining = max(rebalanceTimeout - delay, 0)
        } else {
            initialDelayActive = false
            joinDeadline = now + max(rebalanceTimeout, 0)
        }
        transition(to: .preparingRebalance, now: now)
        // As Kafka's purgatory does: a rebalance nobody needs to rejoin (the last member left) ends at once.
        return actions + tryCompleteJoin(now: now)
    }

    mutating func transition(to newState: GroupState, now: Int64) {
        state = newState
        stateTimestamp = now
    }

    var allMembersJoined: Bool { pendingMembers.isEmpty && members.allSatisfy { $0.joinToken != nil } }

    mutating func tryCompleteJoin(now: Int64) -> [GroupAction] {
        guard state == .preparingRebalance, !initialDelayActive, allMembersJoined else { return [] }
        return completeJoin(now: now)
    }

    /// The protocol for the next generation: among those every member supports, the one most
    /// members prefer (ties go to the earliest in the first member's order).
    func selectProtocol() -> String? {
        guard let first = members.first else { return nil }
        let candidates = first.protocols.map(\.name).filter { name in members.allSatisfy { $0.protocols.contains { $0.name == name } } }
        guard !candidates.isEmpty else { return nil }
        var votes = Array(repeating: 0, count: candidates.count)
        for member in members {
            if let choice = member.protocols.first(where: { candidates.contains($0.name) }), let slot = candidates.firstIndex(of: choice.name) {
                votes[slot] += 1
            }
        }
        var best = 0
        for slot in votes.indices where votes[slot] > votes[best] { best = slot }
        return candidates[best]
    }

    mutating func completeJoin(now: Int64) -> [GroupAction] {
        var actions: [GroupAction] = []
        // Dynamic members that did not rejoin in time are out; static ones keep their place.
        for member in members where member.joinToken == nil && member.groupInstanceId == nil {
            dropMember(member.memberId)
        }
        if !members.isEmpty, leaderId.flatMap(member)?.joinToken == nil {
            guard let joined = members.first(where: { $0.joinToken != nil }) else {
                // Only static members that have not rejoined: wait another rebalance timeout for them.
                joinDeadline = now + Int64(members.map(\.rebalanceTimeoutMs).max() ?? 0)
                return []
            }
            leaderId = joined.memberId
        }
        generationId &+= 1
        joinDeadline = nil
        initialDelayActive = false
        newMemberAdded = false
        if members.isEmpty {
            protocolName = nil
            transition(to: .empty, now: now)
            return [.store(.emptyGeneration(generation: generationId))]
        }
        protocolName = selectProtocol()
        transition(to: .completingRebalance, now: now)
        let all = currentMemberMetadata()
        for index in members.indices {
            guard let token = members[index].joinToken else { continue }
            var outcome = currentJoinOutcome(for: members[index].memberId, includeMembers: false)
            if isLeader(members[index].memberId) { outcome.members = all }
            actions.append(.joinResponse(token: token, outcome))
            members[index].joinToken = nil
            members[index].isNew = false
            heartbeat(index, now: now)
        }
        return actions
    }

    /// Removes a member without starting a rebalance (the caller decides).
    mutating func dropMember(_ memberId: String) {
        guard let index = memberIndex(memberId) else { return }
        let member = members.remove(at: index)
        if let instanceId = member.groupInstanceId, staticMembers[instanceId] == memberId { staticMembers[instanceId] = nil }
        if leaderId == memberId { leaderId = members.first?.memberId }
    }

    /// Removes a member (it left or its session expired) and rebalances the rest.
    mutating func removeMember(_ memberId: String, error: KafkaErrorCode, now: Int64) -> [GroupAction] {
        guard let index = memberIndex(memberId) else { return [] }
        var actions: [GroupAction] = []
        if let token = members[index].joinToken { actions.append(.joinResponse(token: token, JoinOutcome(error: error, memberId: memberId))) }
        if let token = members[index].syncToken { actions.append(.syncResponse(token: token, SyncOutcome(error: error))) }
        dropMember(memberId)
        switch state {
        case .dead, .empty: break
        case .stable, .completingRebalance: actions += maybePrepareRebalance(now: now)
        case .preparingRebalance: actions += tryCompleteJoin(now: now)
        }
        return actions
    }

    // MARK: SyncGroup, Heartbeat, LeaveGroup

    /// A SyncGroup request; the leader's `assignments` are ignored from anyone else.
    public mutating func sync(
        memberId: String, groupInstanceId: String?, generationId requested: Int32, protocolType type: String?, protocolName name: String?,
        assignments: [(memberId: String, assignment: ByteBuffer)], token: UInt64, now: Int64
    ) -> [GroupAction] {
        func answer(_ code: KafkaErrorCode) -> [GroupAction] { [.syncResponse(token: token, SyncOutcome(error: code))] }
        guard state != .dead else { return answer(.coordinatorNotAvailable) }
        if isStaticMemberFenced(memberId: memberId, instanceId: groupInstanceId) { return answer(.fencedInstanceId) }
        guard let index = memberIndex(memberId) else { return answer(.unknownMemberId) }
        guard requested == generationId else { return answer(.illegalGeneration) }
        if let type, type != protocolType { return answer(.inconsistentGroupProtocol) }
        if let name, name != protocolName { return answer(.inconsistentGroupProtocol) }
        switch state {
        case .empty, .dead:
            return answer(.unknownMemberId)
        case .preparingRebalance:
            return answer(.rebalanceInProgress)
        case .completingRebalance:
            var actions: [GroupAction] = []
            if let previous = members[index].syncToken {
                actions.append(.syncResponse(token: previous, SyncOutcome(error: .rebalanceInProgress)))
            }
            members[index].syncToken = token
            heartbeat(index, now: now)
            guard isLeader(memberId) else { return actions }
            for slot in members.indices {
                members[slot].assignment = assignments.last { $0.memberId == members[slot].memberId }?.assignment ?? ByteBuffer()
            }
            return actions + [.store(.assignment(generation: generationId))]
        case .stable:
            heartbeat(index, now: now)
            return [.syncResponse(token: token, syncOutcome(members[index].assignment))]
        }
    }

    func syncOutcome(_ assignment: ByteBuffer) -> SyncOutcome {
        var outcome = SyncOutcome(error: .none)
        outcome.protocolType = protocolType
        outcome.protocolName = protocolName
        outcome.assignment = assignment
        return outcome
    }

    /// The write asked for by `.store(reason)` finished.
    public mutating func stored(_ reason: StoreReason, success: Bool, now: Int64) -> [GroupAction] {
        switch reason {
        case .assignment(let generation):
            guard state == .completingRebalance, generation == generationId else { return [] }
            var actions: [GroupAction] = []
            if success {
                transition(to: .stable, now: now)
                for index in members.indices {
                    guard let token = members[index].syncToken else { continue }
                    actions.append(.syncResponse(token: token, syncOutcome(members[index].assignment)))
                    members[index].syncToken = nil
                }
            } else {
                for index in members.indices {
                    members[index].assignment = ByteBuffer()
                    guard let token = members[index].syncToken else { continue }
                    actions.append(.syncResponse(token: token, SyncOutcome(error: .coordinatorNotAvailable)))
                    members[index].syncToken = nil
                }
                actions += prepareRebalance(now: now)
            }
            return actions
        case .staticRejoin(let token, let outcome):
            return [.joinResponse(token: token, success ? outcome : JoinOutcome(error: .coordinatorNotAvailable, memberId: outcome.memberId))]
        case .emptyGeneration:
            return []
        }
    }

    /// A Heartbeat request.
    public mutating func heartbeat(memberId: String, groupInstanceId: String?, generationId requested: Int32, now: Int64) -> KafkaErrorCode {
        guard state != .dead else { return .coordinatorNotAvailable }
        if isStaticMemberFenced(memberId: memberId, instanceId: groupInstanceId) { return .fencedInstanceId }
        guard state != .empty, let index = memberIndex(memberId) else { return .unknownMemberId }
        guard requested == generationId else { return .illegalGeneration }
        heartbeat(index, now: now)
        return state == .preparingRebalance ? .rebalanceInProgress : .none
    }

    /// A LeaveGroup request: one result per leaving member, in order.
    public mutating func leave(_ leaving: [(memberId: String, groupInstanceId: String?)], now: Int64) -> (results: [KafkaErrorCode], actions: [GroupAction]) {
        guard state != .dead else { return (leaving.map { _ in .coordinatorNotAvailable }, []) }
        var results: [KafkaErrorCode] = []
        var actions: [GroupAction] = []
        for item in leaving {
            if let instanceId = item.groupInstanceId {
                guard let mapped = staticMembers[instanceId] else {
                    results.append(.unknownMemberId)
                    continue
                }
                if !item.memberId.isEmpty && item.memberId != mapped {
                    results.append(.fencedInstanceId)
                    continue
                }
                actions += removeMember(mapped, error: .unknownMemberId, now: now)
                results.append(.none)
            } else if pendingMembers.removeValue(forKey: item.memberId) != nil {
                actions += tryCompleteJoin(now: now)
                results.append(.none)
            } else if memberIndex(item.memberId) != nil {
                actions += removeMember(item.memberId, error: .unknownMemberId, now: now)
                results.append(.none)
            } else {
                results.append(.unknownMemberId)
            }
        }
        return (results, actions)
    }

    // MARK: Time

    /// Expires sessions and pending member ids, and ends a rebalance whose time is up.
    public mutating func tick(now: Int64) -> [GroupAction] {
        var actions: [GroupAction] = []
        var pendingExpired = false
        for id in pendingMembers.keys.sorted() where (pendingMembers[id] ?? .max) <= now {
            pendingMembers[id] = nil
            pendingExpired = true
        }
        if pendingExpired { actions += tryCompleteJoin(now: now) }
        let expired = members.filter { $0.heartbeatDeadline <= now && !shouldKeepAlive($0, now: now) }.map(\.memberId)
        for memberId in expired {
            actions += removeMember(memberId, error: .unknownMemberId, now: now)
        }
        if state == .preparingRebalance, let deadline = joinDeadline, now >= deadline {
            if initialDelayActive && newMemberAdded && initialDelayRemaining > 0 {
                newMemberAdded = false
                let delay = min(config.initialRebalanceDelayMs, initialDelayRemaining)
                initialDelayRemaining = max(initialDelayRemaining - delay, 0)
                joinDeadline = now + delay
            } else {
                initialDelayActive = false
                actions += completeJoin(now: now)
            }
        }
        return actions
    }

    func shouldKeepAlive(_ member: GroupMember, now: Int64) -> Bool {
        if member.joinToken != nil { return !member.isNew || member.latestHeartbeat + config.newMemberJoinTimeoutMs > now }
        return member.syncToken != nil
    }

    /// The earliest time `tick` has something to do, if any.
    public var nextDeadline: Int64? {
        var deadlines = members.map(\.heartbeatDeadline) + pendingMembers.values
        if let joinDeadline { deadlines.append(joinDeadline) }
        return deadlines.min()
    }

    // MARK: Offsets

    /// Whether an OffsetCommit from this member at this generation may commit: nil when it may, else
    /// the error for every partition. A commit with generation -1 to a group without members is a
    /// "simple" commit (assign()-mode consumers, tools), which Kafka accepts.
    public mutating func validateCommit(memberId: String, groupInstanceId: String?, generationId requested: Int32, now: Int64) -> KafkaErrorCode? {
        if state == .dead { return .coordinatorNotAvailable }
        if isStaticMemberFenced(memberId: memberId, instanceId: groupInstanceId) { return .fencedInstanceId }
        if requested < 0 && state == .empty { return nil }
        if state == .completingRebalance { return .rebalanceInProgress }
        guard let index = memberIndex(memberId) else { return .unknownMemberId }
        guard requested == generationId else { return .illegalGeneration }
        heartbeat(index, now: now)
        return nil
    }

    /// Records a durable offset commit written at `position` in `__consumer_offsets`.
    public mutating func applyOffset(_ key: OffsetKey, _ value: CommittedOffset?, position: Int64) {
        if let current = offsetPositions[key], current > position { return }
        offsetPositions[key] = position
        offsets[key] = value
    }

    /// Offsets past retention, as Kafka decides (KIP-211): in a group without members, all of them
    /// once it has been empty for the retention time (offsets committed without ever joining count
    /// from their commit); in a stable consumer group, those of topics no member subscribes to any
    /// more, counted from their commit.
    public func expiredOffsets(now: Int64) -> [OffsetKey] {
        let retention = config.offsetsRetentionMs
        switch state {
        case .empty:
            return offsets.filter { key, value in
                let base = protocolType == nil ? value.commitTimestamp : max(stateTimestamp, value.commitTimestamp)
                return base + retention <= now
            }.keys.sorted()
        case .stable where protocolType == "consumer":
            let subscribed = subscribedTopics
            guard !subscribed.isEmpty else { return [] }
            return offsets.filter { key, value in !subscribed.contains(key.topic) && value.commitTimestamp + retention <= now }.keys.sorted()
        default:
            return []
        }
    }

    /// Marks the group deleted (DeleteGroups); the driver forgets it.
    public mutating func markDead(now: Int64) {
        transition(to: .dead, now: now)
    }

    // MARK: Persistence

    /// The group's metadata as written to `__consumer_offsets`.
    public func metadataValue(now: Int64) -> GroupMetadataValue {
        GroupMetadataValue(
            protocolType: protocolType, generationId: generationId, protocolName: protocolName, leaderId: leaderId, stateTimestamp: now,
            members: members.map { member in
                GroupMetadataValue.Member(
                    memberId: member.memberId, groupInstanceId: member.groupInstanceId, clientId: member.clientId, clientHost: member.clientHost,
                    rebalanceTimeoutMs: member.rebalanceTimeoutMs, sessionTimeoutMs: member.sessionTimeoutMs,
                    subscription: member.metadata(for: protocolName), assignment: member.assignment)
            })
    }

    /// Rebuilds a group from its records: Stable with its members when it had any, else Empty.
    /// Every member's session starts at `now`.
    public init(groupId: String, config: GroupConfig = GroupConfig(), loaded value: GroupMetadataValue?, offsets: [OffsetKey: CommittedOffset], now: Int64) {
        self.init(groupId: groupId, config: config, now: now)
        self.offsets = offsets
        guard let value else { return }
        protocolType = value.protocolType
        generationId = value.generationId
        protocolName = value.protocolName
        leaderId = value.leaderId
        stateTimestamp = value.stateTimestamp
        members = value.members.map { loaded in
            var member = GroupMember(
                memberId: loaded.memberId, groupInstanceId: loaded.groupInstanceId, clientId: loaded.clientId, clientHost: loaded.clientHost,
                rebalanceTimeoutMs: loaded.rebalanceTimeoutMs, sessionTimeoutMs: loaded.sessionTimeoutMs, protocolType: value.protocolType ?? "",
                protocols: [GroupProtocol(name: value.protocolName ?? "", metadata: loaded.subscription)], assignment: loaded.assignment)
            member.latestHeartbeat = now
            member.heartbeatDeadline = now + Int64(loaded.sessionTimeoutMs)
            return member
        }
        for member in members {
            if let instanceId = member.groupInstanceId { staticMembers[instanceId] = member.memberId }
        }
        state = members.isEmpty ? .empty : .stable
        if let leader = leaderId, member(leader) == nil { leaderId = members.first?.memberId }
    }
}
