import KafkaProtocol
import NIOCore

/// Classic-protocol members inside a consumer group (KIP-848's online upgrade and downgrade): a
/// live classic group becomes a consumer group when a consumer-protocol member joins it; its
/// members keep talking JoinGroup, SyncGroup and Heartbeat, and the coordinator assigns for them.
/// They reconcile like every member: Heartbeat says REBALANCE_IN_PROGRESS when their assignment
/// must change, the rejoin reports what they own (the subscription's owned partitions, none for
/// eager assignors), and SyncGroup hands out what the coordinator assigned.
extension ConsumerGroup {
    /// What a classic JoinGroup on a consumer group gets.
    public enum ClassicJoinResult: Sendable, Hashable {
        case joined(memberId: String, generationId: Int32, protocolName: String)
        /// JoinGroup v4+: the member must come back with this id (KIP-394).
        case memberIdRequired(String)
        case failed(KafkaErrorCode)
    }

    /// The subscription a classic member's protocols carry (the first one that parses), with the
    /// protocol's name.
    static func subscription(_ protocols: [GroupProtocol]) -> (name: String, subscription: ConsumerProtocolSubscription)? {
        for item in protocols {
            var bytes = item.metadata
            guard let version: Int16 = try? bytes.readKafkaInteger(),
                  let parsed = try? ConsumerProtocolSubscription(from: &bytes, version: min(max(version, 0), 3)) else { continue }
            return (item.name, parsed)
        }
        return nil
    }

    static func idAssignment(_ partitions: [(topic: String, partitions: [Int32])], catalog: TopicCatalog) -> MemberAssignment {
        var out: MemberAssignment = [:]
        for item in partitions {
            guard let topic = catalog.byName[item.topic] else { continue }
            out[topic.id, default: []].formUnion(item.partitions.filter { $0 >= 0 && $0 < topic.partitionCount })
        }
        return Assignments.normalized(out)
    }

    /// A classic group with members, converted: every member keeps its id, generation (as its
    /// epoch) and assignment; nil when a member's subscription or assignment does not parse.
    public init?(upgrading classic: ClassicGroup, catalog: TopicCatalog, now: Int64) {
        guard classic.protocolType == "consumer", classic.state == .stable, let protocolName = classic.protocolName else { return nil }
        self.init(groupId: classic.groupId, config: classic.config)
        for old in classic.members {
            guard let (_, subscription) = Self.subscription([GroupProtocol(name: protocolName, metadata: old.metadata(for: protocolName))]) else { return nil }
            var bytes = old.assignment
            var assigned: MemberAssignment = [:]
            if bytes.readableBytes > 0 {
                guard let version: Int16 = try? bytes.readKafkaInteger(),
                      let parsed = try? ConsumerProtocolAssignment(from: &bytes, version: min(max(version, 0), 3)) else { return nil }
                assigned = Self.idAssignment(parsed.assignedPartitions.map { ($0.topic, $0.partitions) }, catalog: catalog)
            }
            var member = ConsumerGroupMember(
                memberId: old.memberId, instanceId: old.groupInstanceId, clientId: old.clientId, clientHost: old.clientHost,
                rebalanceTimeoutMs: old.rebalanceTimeoutMs, subscribedTopicNames: Array(Set(subscription.topics)).sorted(),
                memberEpoch: classic.generationId, previousMemberEpoch: classic.generationId - 1, assigned: assigned)
            member.classic = .init(sessionTimeoutMs: old.sessionTimeoutMs, protocols: old.protocols)
            member.sessionDeadline = now + Int64(old.sessionTimeoutMs)
            // Assignments of the old generation may overlap only if the leader's were broken: first come, first kept.
            member.assigned = Assignments.make(Assignments.partitions(assigned).filter { owners[$0] == nil })
            for partition in Assignments.partitions(member.assigned) { owners[partition] = old.memberId }
            members[old.memberId] = member
            targetAssignment[old.memberId] = member.assigned
            if let instanceId = old.groupInstanceId { staticMembers[instanceId] = old.memberId }
        }
        _ = refreshSubscriptionMetadata(catalog)
        groupEpoch = classic.generationId
        assignmentEpoch = classic.generationId
        changed = true
    }

    /// Whether every member speaks the classic protocol (the group can go back to being a classic group).
    public var onlyClassicMembers: Bool { !members.isEmpty && members.values.allSatisfy { $0.classic != nil } }

    /// JoinGroup of a classic member.
    public mutating func classicJoin(
        _ input: JoinInput, newMemberId: String, catalog: TopicCatalog, now: Int64
    ) -> ClassicJoinResult {
        guard input.protocolType == "consumer", let (protocolName, subscription) = Self.subscription(input.protocols) else {
            return .failed(.inconsistentGroupProtocol)
        }
        var memberId = input.memberId
        if memberId.isEmpty {
            if let instanceId = input.groupInstanceId, let existing = staticMembers[instanceId] {
                guard let old = members[existing], old.classic != nil else { return .failed(.unreleasedInstanceId) }
                // A static classic member restarting takes its old self's place.
                replaceStaticMember(existing, by: newMemberId, instanceId: instanceId, epoch: old.memberEpoch)
                memberId = newMemberId
            } else if input.requireKnownMemberId {
                pendingClassicMembers.insert(newMemberId)
                return .memberIdRequired(newMemberId)
            } else {
                memberId = newMemberId
            }
        } else if members[memberId] == nil {
            guard pendingClassicMembers.remove(memberId) != nil else { return .failed(.unknownMemberId) }
        }
        if let existing = members[memberId], existing.classic == nil { return .failed(.unknownMemberId) }
        var member = members[memberId] ?? ConsumerGroupMember(memberId: memberId, instanceId: input.groupInstanceId, memberEpoch: 0, previousMemberEpoch: -1)
        let before = members[memberId]?.persisted
        let topics = Array(Set(subscription.topics)).sorted()
        let subscriptionChanged = before == nil || topics != member.subscribedTopicNames
        member.subscribedTopicNames = topics
        member.rebalanceTimeoutMs = input.rebalanceTimeoutMs
        member.clientId = input.clientId
        member.clientHost = input.clientHost
        member.classic = .init(sessionTimeoutMs: input.sessionTimeoutMs, protocols: input.protocols)
        member.sessionDeadline = now + Int64(input.sessionTimeoutMs)
        if member.persisted != before { changed = true }
        members[memberId] = member
        if let instanceId = input.groupInstanceId { staticMembers[instanceId] = memberId }
        if refreshSubscriptionMetadata(catalog) || subscriptionChanged {
            groupEpoch += 1
            changed = true
        }
        if groupEpoch > assignmentEpoch { computeTargetAssignment() }
        let owned = subscription.ownedPartitions.flatMap { item in
            (catalog.byName[item.topic].map { topic in item.partitions.map { TopicIdPartition(topicId: topic.id, partition: $0) } }) ?? []
        }
        reconcile(memberId, owned: owned, now: now)
        return .joined(memberId: memberId, generationId: members[memberId]?.memberEpoch ?? -1, protocolName: protocolName)
    }

    /// SyncGroup of a classic member: its assignment, as the consumer protocol's bytes with topic names.
    public mutating func classicSync(memberId: String, generationId: Int32, catalog: TopicCatalog, now: Int64) -> (error: KafkaErrorCode, assignment: ByteBuffer) {
        guard var member = members[memberId], member.classic != nil else { return (.unknownMemberId, ByteBuffer()) }
        guard generationId == member.memberEpoch else { return (.illegalGeneration, ByteBuffer()) }
        member.sessionDeadline = now + member.sessionTimeoutMs(config)
        members[memberId] = member
        return (.none, Self.classicAssignment(member.assigned, catalog: catalog))
    }

    /// An assignment as the classic consumer protocol carries it (version 0, topics by name).
    static func classicAssignment(_ assigned: MemberAssignment, catalog: TopicCatalog) -> ByteBuffer {
        var assignment = ConsumerProtocolAssignment()
        assignment.assignedPartitions = ConsumerGroupHandlers.sortedTopics(assigned).compactMap { topic, partitions in
            guard let name = catalog.byId[topic]?.name else { return nil }
            var item = ConsumerProtocolAssignment.TopicPartition()
            item.topic = name
            item.partitions = partitions
            return item
        }
        var bytes = ByteBuffer()
        bytes.writeKafkaInteger(Int16(0))
        try? assignment.encode(to: &bytes, version: 0)
        return bytes
    }

    /// Heartbeat of a classic member: REBALANCE_IN_PROGRESS when its assignment must change.
    public mutating func classicHeartbeat(memberId: String, generationId: Int32, catalog: TopicCatalog, now: Int64) -> KafkaErrorCode {
        guard var member = members[memberId], member.classic != nil else { return .unknownMemberId }
        guard generationId == member.memberEpoch else { return .illegalGeneration }
        member.sessionDeadline = now + member.sessionTimeoutMs(config)
        members[memberId] = member
        if refreshSubscriptionMetadata(catalog) {
            groupEpoch += 1
            changed = true
        }
        if groupEpoch > assignmentEpoch { computeTargetAssignment() }
        if member.state == .unrevokedPartitions { return .rebalanceInProgress }
        // Without knowing what it owns, the coordinator can still tell whether it would move it.
        reconcile(memberId, owned: nil, now: now)
        guard let after = members[memberId] else { return .unknownMemberId }
        return after.memberEpoch != generationId || after.assigned != member.assigned || after.state == .unrevokedPartitions ? .rebalanceInProgress : .none
    }

    /// LeaveGroup of classic members; one error per member.
    public mutating func classicLeave(_ leaving: [(memberId: String, groupInstanceId: String?)]) -> [KafkaErrorCode] {
        leaving.map { item in
            let memberId = item.groupInstanceId.flatMap { staticMembers[$0] } ?? item.memberId
            guard members[memberId]?.classic != nil else { return .unknownMemberId }
            if item.groupInstanceId != nil, !item.memberId.isEmpty, memberId != item.memberId { return .fencedInstanceId }
            remove(memberId)
            return .none
        }
    }

    /// The classic group this one becomes when only classic members are left (the online
    /// downgrade): same members, ids and assignments at a new generation, rebalancing so they
    /// agree on an assignor again.
    public func downgraded(offsets: [OffsetKey: CommittedOffset], catalog: TopicCatalog, now: Int64) -> ClassicGroup? {
        guard onlyClassicMembers else { return nil }
        let ids = members.keys.sorted()
        guard let first = ids.first.flatMap({ members[$0] }), let protocolName = first.classic?.protocols.first?.name else { return nil }
        let value = GroupMetadataValue(
            protocolType: "consumer", generationId: groupEpoch, protocolName: protocolName, leaderId: first.memberId, stateTimestamp: now,
            members: ids.compactMap { id in
                guard let member = members[id], let classic = member.classic else { return nil }
                let assignment = Self.classicAssignment(member.assigned, catalog: catalog)
                return GroupMetadataValue.Member(
                    memberId: id, groupInstanceId: member.instanceId, clientId: member.clientId, clientHost: member.clientHost,
                    rebalanceTimeoutMs: member.rebalanceTimeoutMs, sessionTimeoutMs: classic.sessionTimeoutMs,
                    subscription: classic.protocols.first { $0.name == protocolName }?.metadata ?? ByteBuffer(), assignment: assignment)
            })
        return ClassicGroup(groupId: groupId, config: config, loaded: value, offsets: offsets, now: now)
    }
}
