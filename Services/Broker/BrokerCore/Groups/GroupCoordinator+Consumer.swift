import ClusterMetadata
import KafkaProtocol

/// The consumer protocol (KIP-848): ConsumerGroupHeartbeat and ConsumerGroupDescribe on each group's
/// `ConsumerGroup` state machine, whose stored form is written to `__consumer_offsets` before a
/// heartbeat that changed it is answered.
extension GroupCoordinator {
    /// A member of a consumer group as ConsumerGroupDescribe shows it.
    public struct ConsumerMemberDescription: Sendable, Hashable {
        public var member: ConsumerGroupMember
        public var target: MemberAssignment
    }

    /// A consumer group as ConsumerGroupDescribe shows it.
    public struct ConsumerGroupDescription: Sendable, Hashable {
        public var groupId: String
        public var state: String
        public var groupEpoch: Int32
        public var assignmentEpoch: Int32
        public var assignorName: String
        public var members: [ConsumerMemberDescription]
    }

    /// The topic catalog at the current metadata version.
    func topicCatalog() async -> TopicCatalog {
        let state = await context.metadata.state
        if let cached = catalogCache, cached.version == state.lastAppliedIndex { return cached }
        let topics = state.topics.values.map { TopicCatalog.Topic(name: $0.name, id: $0.topicId, partitionCount: Int32(clamping: $0.partitions.count)) }
        let internalNames = Set(state.topics.values.filter(\.isInternal).map(\.name)).union([CoordinatorPlacement.offsetsTopic])
        let catalog = TopicCatalog(version: state.lastAppliedIndex, topics: topics, internalNames: internalNames)
        catalogCache = catalog
        return catalog
    }

    /// ConsumerGroupHeartbeat: answered once what it changed is durable.
    public func consumerHeartbeat(groupId: String, request: ConsumerHeartbeat) async -> ConsumerHeartbeatOutcome {
        guard !groupId.isEmpty else { return ConsumerHeartbeatOutcome(error: .invalidRequest, message: "GroupId can't be empty.") }
        let catalog = await topicCatalog()
        let partition: Int32
        let hosted: OffsetsPartition
        switch owner(groupId) {
        case .unavailable(let code): return ConsumerHeartbeatOutcome(error: code)
        case .hosted(let p, let s): (partition, hosted) = (p, s)
        }
        var extra: [GroupRecord] = []
        var group: ConsumerGroup
        if let existing = hosted.consumerGroups[groupId] {
            group = existing
        } else if let classic = hosted.groups[groupId], !classic.members.isEmpty || classic.state != .empty {
            // A live classic group converts when a consumer-protocol member joins it (KIP-848's online upgrade).
            guard request.memberEpoch == 0, let upgraded = upgrade(groupId, catalog: catalog, hosted: hosted) else {
                return ConsumerHeartbeatOutcome(error: .groupIdNotFound, message: "Group \(groupId) is not a consumer group.")
            }
            group = upgraded
            hosted.consumerGroups[groupId] = upgraded
            extra = [.metadata(group: groupId, value: nil)]
        } else {
            group = ConsumerGroup(groupId: groupId, config: config)
        }
        let outcome = group.heartbeat(request, newMemberId: Self.newMemberId(clientId: request.clientId), catalog: catalog, now: context.now())
        guard group.takeChanged() else {
            if hosted.consumerGroups[groupId] != nil { hosted.consumerGroups[groupId] = group }
            return outcome
        }
        // The offsets of every group live in its classic entry; an empty one is created with the group.
        if hosted.groups[groupId] == nil { hosted.groups[groupId] = ClassicGroup(groupId: groupId, config: config, now: context.now()) }
        let error = await storeAfterChange(group, extra: extra, catalog: catalog, partition: partition, hosted: hosted)
        guard error == .none else { return ConsumerHeartbeatOutcome(error: error, message: "storing the group failed") }
        return outcome
    }

    /// Removes consumer-protocol members past their session or revocation deadline and stores the groups they leave.
    func expireConsumerMembers(now: Int64, partition: Int32, hosted: OffsetsPartition) {
        for groupId in hosted.consumerGroups.keys.sorted() {
            guard var group = hosted.consumerGroups[groupId], let deadline = group.nextDeadline, deadline <= now else { continue }
            let removed = group.expire(now: now)
            hosted.consumerGroups[groupId] = group
            guard group.takeChanged() else { continue }
            logger.info("consumer group members expired", metadata: ["group": "\(groupId)", "members": "\(removed)", "group_epoch": "\(group.groupEpoch)"])
            let records = catalogCache.flatMap { downgradeIfOnlyClassic(group, catalog: $0, partition: partition, hosted: hosted) }
                ?? [GroupRecord.consumerGroup(group: groupId, value: ConsumerGroupRecordValue(group))]
            Task {
                let result = await self.append(records, partition: partition)
                if result.errorCode != 0 {
                    self.logger.warning("writing consumer group failed", metadata: ["group": "\(groupId)", "error": "\(result.errorCode)"])
                }
            }
        }
    }

    /// ConsumerGroupDescribe of one group: GROUP_ID_NOT_FOUND for an unknown or classic group.
    public func describeConsumerGroup(_ groupId: String) -> (error: KafkaErrorCode, message: String?, group: ConsumerGroupDescription?) {
        let hosted: OffsetsPartition
        switch owner(groupId) {
        case .unavailable(let code): return (code, nil, nil)
        case .hosted(_, let s): hosted = s
        }
        guard let group = hosted.consumerGroups[groupId] else {
            if let classic = hosted.groups[groupId], classic.state != .empty || !classic.members.isEmpty {
                return (.groupIdNotFound, "Group \(groupId) is not a consumer group.", nil)
            }
            return (.groupIdNotFound, "Group \(groupId) not found.", nil)
        }
        let members = group.members.keys.sorted().compactMap { id in
            group.members[id].map { ConsumerMemberDescription(member: $0, target: group.targetAssignment[id] ?? [:]) }
        }
        return (
            .none, nil,
            ConsumerGroupDescription(
                groupId: groupId, state: group.state.rawValue, groupEpoch: group.groupEpoch, assignmentEpoch: group.assignmentEpoch,
                assignorName: group.assignorName, members: members)
        )
    }

    /// Whether an offset commit or fetch of a member of consumer group `groupId` may go ahead; nil
    /// when the group is not a consumer-protocol group (the classic rules apply).
    func validateConsumerOffsets(
        groupId: String, memberId: String, memberEpoch: Int32, hosted: OffsetsPartition, commitVersion: Int16?
    ) -> KafkaErrorCode? {
        guard let group = hosted.consumerGroups[groupId] else { return nil }
        // Admin tools and assign()-mode consumers commit with epoch -1 into an empty group.
        if memberEpoch < 0 && (commitVersion == nil ? memberId.isEmpty : group.members.isEmpty) { return KafkaErrorCode.none }
        guard let member = group.members[memberId] else { return .unknownMemberId }
        if let version = commitVersion, version < 9 { return .unsupportedVersion }
        return member.memberEpoch == memberEpoch ? KafkaErrorCode.none : .staleMemberEpoch
    }
}
