import KafkaProtocol
import NIOCore

/// The rest of a group's life after JoinGroup: SyncGroup, heartbeats, LeaveGroup, timeouts,
/// offset commits and what is persisted.
extension ClassicGroup {
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
