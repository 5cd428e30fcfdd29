import KafkaProtocol
import NIOCore

/// Online conversion between the protocols (KIP-848): a live classic group becomes a consumer
/// group when a consumer-protocol member joins it, its classic members keep using JoinGroup,
/// SyncGroup, Heartbeat and LeaveGroup on the consumer group, and the group turns classic again
/// when the last consumer-protocol member leaves. Each conversion is one write: the new kind's
/// record and the old kind's tombstone in one batch.
extension GroupCoordinator {
    /// Writes a consumer group's stored form (and `extra` records first, in the same batch).
    func storeConsumerGroup(_ group: ConsumerGroup, extra: [GroupRecord] = [], partition: Int32, hosted: OffsetsPartition) async -> KafkaErrorCode {
        let result = await append(extra + [.consumerGroup(group: group.groupId, value: ConsumerGroupRecordValue(group))], partition: partition)
        let error = Self.commitError(result.errorCode)
        guard error == .none else { return error }
        return offsetsPartitions[partition] === hosted ? .none : .notCoordinator
    }

    /// The live classic group `groupId` converted into a consumer group, or nil when it cannot be
    /// (another protocol type, mid-rebalance, unparseable subscriptions): the caller answers
    /// GROUP_ID_NOT_FOUND then, as Kafka does.
    func upgrade(_ groupId: String, catalog: TopicCatalog, hosted: OffsetsPartition) -> ConsumerGroup? {
        guard let classic = hosted.groups[groupId], !classic.members.isEmpty,
              let group = ConsumerGroup(upgrading: classic, catalog: catalog, now: context.now()) else { return nil }
        // The classic entry keeps only the offsets from now on.
        var container = ClassicGroup(groupId: groupId, config: config, loaded: nil, offsets: classic.offsets, now: context.now())
        container.offsetPositions = classic.offsetPositions
        hosted.groups[groupId] = container
        logger.info("classic group converted to a consumer group", metadata: ["group": "\(groupId)", "members": "\(group.members.count)"])
        return group
    }

    /// Turns `group` back into a classic group if only classic members are left; the records to
    /// write for it, or nil when it stays a consumer group.
    func downgradeIfOnlyClassic(_ group: ConsumerGroup, catalog: TopicCatalog, partition: Int32, hosted: OffsetsPartition) -> [GroupRecord]? {
        let groupId = group.groupId
        guard group.onlyClassicMembers, let container = hosted.groups[groupId],
              var classic = group.downgraded(offsets: container.offsets, catalog: catalog, now: context.now()) else { return nil }
        classic.offsetPositions = container.offsetPositions
        // The members rejoin and agree on an assignor among themselves again.
        let actions = classic.prepareRebalance(now: context.now())
        hosted.consumerGroups[groupId] = nil
        hosted.groups[groupId] = classic
        perform(actions, groupId: groupId, partition: partition, hosted: hosted)
        logger.info("consumer group converted back to a classic group", metadata: ["group": "\(groupId)", "members": "\(classic.members.count)"])
        return [.consumerGroup(group: groupId, value: nil), .metadata(group: groupId, value: classic.metadataValue(now: context.now()))]
    }

    /// Stores a consumer group after a step that changed it, converting it back to classic when
    /// only classic members are left.
    func storeAfterChange(_ group: ConsumerGroup, extra: [GroupRecord] = [], catalog: TopicCatalog, partition: Int32, hosted: OffsetsPartition) async -> KafkaErrorCode {
        if let records = downgradeIfOnlyClassic(group, catalog: catalog, partition: partition, hosted: hosted) {
            let result = await append(extra + records, partition: partition)
            return Self.commitError(result.errorCode)
        }
        hosted.consumerGroups[group.groupId] = group
        return await storeConsumerGroup(group, extra: extra, partition: partition, hosted: hosted)
    }

    // MARK: Classic members of a consumer group

    func classicJoin(_ groupId: String, input: JoinInput, partition: Int32, hosted: OffsetsPartition) async -> JoinOutcome {
        let catalog = await topicCatalog()
        guard var group = hosted.consumerGroups[groupId] else { return JoinOutcome(error: .unknownMemberId, memberId: input.memberId) }
        let result = group.classicJoin(input, newMemberId: Self.newMemberId(clientId: input.clientId), catalog: catalog, now: context.now())
        hosted.consumerGroups[groupId] = group
        if group.takeChanged() {
            let error = await storeConsumerGroup(group, partition: partition, hosted: hosted)
            guard error == .none else { return JoinOutcome(error: error, memberId: input.memberId) }
        }
        switch result {
        case .failed(let code):
            return JoinOutcome(error: code, memberId: input.memberId)
        case .memberIdRequired(let memberId):
            return JoinOutcome(error: .memberIdRequired, memberId: memberId)
        case .joined(let memberId, let generation, let protocolName):
            // Nobody leads: the coordinator assigns, so every member just syncs.
            var outcome = JoinOutcome(error: .none, memberId: memberId)
            outcome.generationId = generation
            outcome.protocolType = "consumer"
            outcome.protocolName = protocolName
            outcome.leaderId = ""
            return outcome
        }
    }

    func classicSync(_ groupId: String, memberId: String, generationId: Int32, hosted: OffsetsPartition) async -> SyncOutcome {
        let catalog = await topicCatalog()
        guard var group = hosted.consumerGroups[groupId] else { return SyncOutcome(error: .unknownMemberId) }
        let (error, assignment) = group.classicSync(memberId: memberId, generationId: generationId, catalog: catalog, now: context.now())
        hosted.consumerGroups[groupId] = group
        var outcome = SyncOutcome(error: error)
        guard error == .none else { return outcome }
        outcome.assignment = assignment
        outcome.protocolType = "consumer"
        outcome.protocolName = group.members[memberId]?.classic.flatMap { ConsumerGroup.subscription($0.protocols)?.name }
        return outcome
    }

    func classicHeartbeat(_ groupId: String, memberId: String, generationId: Int32, partition: Int32, hosted: OffsetsPartition) async -> KafkaErrorCode {
        let catalog = await topicCatalog()
        guard var group = hosted.consumerGroups[groupId] else { return .unknownMemberId }
        let code = group.classicHeartbeat(memberId: memberId, generationId: generationId, catalog: catalog, now: context.now())
        hosted.consumerGroups[groupId] = group
        if group.takeChanged() {
            let error = await storeConsumerGroup(group, partition: partition, hosted: hosted)
            if error != .none { return error }
        }
        return code
    }

    func classicLeave(_ groupId: String, members: [(memberId: String, groupInstanceId: String?)], partition: Int32, hosted: OffsetsPartition) async -> [KafkaErrorCode] {
        let catalog = await topicCatalog()
        guard var group = hosted.consumerGroups[groupId] else { return members.map { _ in .unknownMemberId } }
        let results = group.classicLeave(members)
        hosted.consumerGroups[groupId] = group
        if group.takeChanged() {
            let error = await storeAfterChange(group, catalog: catalog, partition: partition, hosted: hosted)
            if error != .none { return members.map { _ in error } }
        }
        return results
    }
}
