import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import NIOCore

/// The group APIs: membership (join, sync, heartbeat, leave), offsets (commit, fetch, delete) and
/// administration (describe, list, delete), each on the group's `ClassicGroup` state machine.
extension GroupCoordinator {
    // MARK: Membership

    /// JoinGroup: answers when the rebalance completes (or at once for errors and the member-id round).
    public func join(groupId: String, input: JoinInput) async -> JoinOutcome {
        guard !groupId.isEmpty else { return JoinOutcome(error: .invalidGroupId, memberId: input.memberId) }
        guard case .hosted(let partition, let hosted) = owner(groupId) else {
            if case .unavailable(let code) = owner(groupId) { return JoinOutcome(error: code, memberId: input.memberId) }
            return JoinOutcome(error: .notCoordinator)
        }
        if let consumer = hosted.consumerGroups[groupId] {
            guard consumer.members.isEmpty else {
                return await classicJoin(groupId, input: input, partition: partition, hosted: hosted)
            }
            // An empty consumer-protocol group becomes a classic group again; its offsets stay.
            let result = await append([.consumerGroup(group: groupId, value: nil)], partition: partition)
            guard result.errorCode == 0 else { return JoinOutcome(error: Self.commitError(result.errorCode), memberId: input.memberId) }
            guard offsetsPartitions[partition] === hosted else { return JoinOutcome(error: .notCoordinator, memberId: input.memberId) }
            if hosted.consumerGroups[groupId]?.members.isEmpty == true { hosted.consumerGroups[groupId] = nil }
            if hosted.consumerGroups[groupId] != nil { return JoinOutcome(error: .inconsistentGroupProtocol, memberId: input.memberId) }
        }
        let created = hosted.groups[groupId] == nil
        if created {
            guard input.memberId.isEmpty else { return JoinOutcome(error: .unknownMemberId, memberId: input.memberId) }
            hosted.groups[groupId] = ClassicGroup(groupId: groupId, config: config, now: context.now())
        }
        let token = takeToken()
        let newMemberId = Self.newMemberId(clientId: input.clientId)
        return await withCheckedContinuation { continuation in
            joinWaiters[token] = (partition, continuation)
            guard var group = hosted.groups[groupId] else {
                joinWaiters.removeValue(forKey: token)?.continuation.resume(returning: JoinOutcome(error: .coordinatorNotAvailable))
                return
            }
            let actions = group.join(input, token: token, newMemberId: newMemberId, now: context.now())
            // A refused first join leaves nothing behind, as in Kafka.
            hosted.groups[groupId] = created && group.isForgettable ? nil : group
            perform(actions, groupId: groupId, partition: partition, hosted: hosted)
        }
    }

    /// SyncGroup: members wait for the leader's assignment to be durable.
    public func sync(
        groupId: String, memberId: String, groupInstanceId: String?, generationId: Int32, protocolType: String?, protocolName: String?,
        assignments: [(memberId: String, assignment: ByteBuffer)]
    ) async -> SyncOutcome {
        guard !groupId.isEmpty else { return SyncOutcome(error: .invalidGroupId) }
        let partition: Int32
        let hosted: OffsetsPartition
        switch owner(groupId) {
        case .unavailable(let code): return SyncOutcome(error: code)
        case .hosted(let p, let s): (partition, hosted) = (p, s)
        }
        if hosted.consumerGroups[groupId]?.members.isEmpty == false {
            return await classicSync(groupId, memberId: memberId, generationId: generationId, hosted: hosted)
        }
        guard hosted.groups[groupId] != nil else { return SyncOutcome(error: .unknownMemberId) }
        let token = takeToken()
        return await withCheckedContinuation { continuation in
            syncWaiters[token] = (partition, continuation)
            guard var group = hosted.groups[groupId] else {
                syncWaiters.removeValue(forKey: token)?.continuation.resume(returning: SyncOutcome(error: .unknownMemberId))
                return
            }
            let actions = group.sync(
                memberId: memberId, groupInstanceId: groupInstanceId, generationId: generationId, protocolType: protocolType,
                protocolName: protocolName, assignments: assignments, token: token, now: context.now())
            hosted.groups[groupId] = group
            perform(actions, groupId: groupId, partition: partition, hosted: hosted)
        }
    }

    /// Heartbeat.
    public func heartbeat(groupId: String, memberId: String, groupInstanceId: String?, generationId: Int32) async -> KafkaErrorCode {
        guard !groupId.isEmpty else { return .invalidGroupId }
        switch owner(groupId) {
        case .unavailable(let code): return code
        case .hosted(let partition, let hosted):
            if hosted.consumerGroups[groupId]?.members.isEmpty == false {
                return await classicHeartbeat(groupId, memberId: memberId, generationId: generationId, partition: partition, hosted: hosted)
            }
            guard var group = hosted.groups[groupId] else { return .unknownMemberId }
            let code = group.heartbeat(memberId: memberId, groupInstanceId: groupInstanceId, generationId: generationId, now: context.now())
            hosted.groups[groupId] = group
            return code
        }
    }

    /// LeaveGroup: a group-level error and one error per leaving member.
    public func leave(groupId: String, members: [(memberId: String, groupInstanceId: String?)]) async -> (error: KafkaErrorCode, members: [KafkaErrorCode]) {
        guard !groupId.isEmpty else { return (.invalidGroupId, []) }
        switch owner(groupId) {
        case .unavailable(let code): return (code, [])
        case .hosted(let partition, let hosted):
            if hosted.consumerGroups[groupId]?.members.isEmpty == false {
                return (.none, await classicLeave(groupId, members: members, partition: partition, hosted: hosted))
            }
            guard var group = hosted.groups[groupId] else { return (.none, members.map { _ in .unknownMemberId }) }
            guard group.state != .dead else { return (.coordinatorNotAvailable, []) }
            let (results, actions) = group.leave(members, now: context.now())
            hosted.groups[groupId] = group
            perform(actions, groupId: groupId, partition: partition, hosted: hosted)
            return (.none, results)
        }
    }

    // MARK: Offsets

    /// OffsetCommit of already validated partitions; answers once the records are durable.
    public func commit(
        groupId: String, memberId: String, groupInstanceId: String?, generationId: Int32, offsets: [(OffsetKey, CommittedOffset)],
        apiVersion: Int16 = 9
    ) async -> KafkaErrorCode {
        // Kafka accepts the empty group id here (old tools commit with it).
        let partition: Int32
        let hosted: OffsetsPartition
        switch owner(groupId) {
        case .unavailable(let code): return code
        case .hosted(let p, let s): (partition, hosted) = (p, s)
        }
        var group = hosted.groups[groupId] ?? ClassicGroup(groupId: groupId, config: config, now: context.now())
        if let verdict = validateConsumerOffsets(groupId: groupId, memberId: memberId, memberEpoch: generationId, hosted: hosted, commitVersion: apiVersion) {
            guard verdict == .none else { return verdict }
        } else {
            if hosted.groups[groupId] == nil && generationId >= 0 { return .illegalGeneration }
            if let error = group.validateCommit(memberId: memberId, groupInstanceId: groupInstanceId, generationId: generationId, now: context.now()) {
                if hosted.groups[groupId] != nil { hosted.groups[groupId] = group }
                return error
            }
        }
        hosted.groups[groupId] = group
        guard !offsets.isEmpty else { return .none }
        let records = offsets.map { GroupRecord.offset(group: groupId, key: $0.0, value: $0.1) }
        let result = await append(records, partition: partition)
        let error = Self.commitError(result.errorCode)
        guard error == .none else { return error }
        guard offsetsPartitions[partition] === hosted else { return .notCoordinator }
        if hosted.groups[groupId] == nil { hosted.groups[groupId] = ClassicGroup(groupId: groupId, config: config, now: context.now()) }
        for (index, item) in offsets.enumerated() {
            hosted.groups[groupId]?.applyOffset(item.0, item.1, position: result.baseOffset + Int64(index))
        }
        return .none
    }

    /// OffsetFetch: the committed offsets of `partitions` (nil: every committed partition); nil
    /// offset for a partition without a commit.
    /// A consumer-protocol member (OffsetFetch v9) names itself and its epoch, which must be current.
    public func fetchOffsets(
        groupId: String, partitions: [OffsetKey]?, memberId: String = "", memberEpoch: Int32 = -1
    ) -> (error: KafkaErrorCode, offsets: [(OffsetKey, CommittedOffset?)]) {
        switch owner(groupId) {
        case .unavailable(let code): return (code, [])
        case .hosted(_, let hosted):
            if let verdict = validateConsumerOffsets(groupId: groupId, memberId: memberId, memberEpoch: memberEpoch, hosted: hosted, commitVersion: nil),
               verdict != .none {
                return (verdict, [])
            }
            let group = hosted.groups[groupId]
            guard let partitions else {
                return (.none, (group?.offsets ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
            }
            return (.none, partitions.map { ($0, group?.offsets[$0]) })
        }
    }

    /// OffsetDelete: a group-level error and one error per partition.
    public func deleteOffsets(groupId: String, partitions: [OffsetKey]) async -> (error: KafkaErrorCode, partitions: [KafkaErrorCode]) {
        let partition: Int32
        let hosted: OffsetsPartition
        switch owner(groupId) {
        case .unavailable(let code): return (code, [])
        case .hosted(let p, let s): (partition, hosted) = (p, s)
        }
        guard let group = hosted.groups[groupId], group.state != .dead else { return (.groupIdNotFound, []) }
        let consumerGroup = group.protocolType == "consumer"
        if group.state != .empty && !consumerGroup { return (.nonEmptyGroup, []) }
        var subscribed = group.state == .empty ? [] : group.subscribedTopics
        if let consumer = hosted.consumerGroups[groupId], !consumer.members.isEmpty { subscribed = consumer.subscribedTopicNames }
        var results: [KafkaErrorCode] = []
        var deletions: [OffsetKey] = []
        for key in partitions {
            if subscribed.contains(key.topic) {
                results.append(.groupSubscribedToTopic)
            } else {
                results.append(.none)
                if group.offsets[key] != nil && !deletions.contains(key) { deletions.append(key) }
            }
        }
        guard !deletions.isEmpty else { return (.none, results) }
        let result = await append(deletions.map { GroupRecord.offset(group: groupId, key: $0, value: nil) }, partition: partition)
        let error = Self.commitError(result.errorCode)
        guard error == .none else { return (error, []) }
        guard offsetsPartitions[partition] === hosted else { return (.notCoordinator, []) }
        for (index, key) in deletions.enumerated() {
            hosted.groups[groupId]?.applyOffset(key, nil, position: result.baseOffset + Int64(index))
        }
        return (.none, results)
    }

    // MARK: Administration

    /// A group as DescribeGroups and ListGroups show it.
    public struct Summary: Sendable, Hashable {
        public struct Member: Sendable, Hashable {
            public var memberId: String
            public var groupInstanceId: String?
            public var clientId: String
            public var clientHost: String
            public var metadata: ByteBuffer
            public var assignment: ByteBuffer
        }

        public var groupId: String
        public var state: GroupState
        public var protocolType: String
        public var protocolName: String
        public var members: [Member]
        /// "classic", or "consumer" for a consumer-protocol (KIP-848) group.
        public var groupType = "classic"
        /// A consumer-protocol group's own state name (Assigning, Reconciling…), shown instead of `state`.
        public var consumerState: String?

        /// The state as ListGroups shows it.
        public var stateName: String { consumerState ?? state.rawValue }
    }

    static func summary(_ group: ConsumerGroup) -> Summary {
        var summary = Summary(
            groupId: group.groupId, state: group.members.isEmpty ? .empty : .stable, protocolType: "consumer", protocolName: "", members: [])
        summary.groupType = "consumer"
        summary.consumerState = group.state.rawValue
        return summary
    }

    static func summary(_ group: ClassicGroup) -> Summary {
        // As Kafka: member metadata, assignment and the protocol only once the group is stable.
        let stable = group.state == .stable
        return Summary(
            groupId: group.groupId, state: group.state, protocolType: group.protocolType ?? "", protocolName: stable ? group.protocolName ?? "" : "",
            members: group.members.map { member in
                Summary.Member(
                    memberId: member.memberId, groupInstanceId: member.groupInstanceId, clientId: member.clientId, clientHost: member.clientHost,
                    metadata: stable ? member.metadata(for: group.protocolName) : ByteBuffer(),
                    assignment: stable ? member.assignment : ByteBuffer())
            })
    }

    /// DescribeGroups of one group: unknown groups are described as Dead, as Kafka does.
    public func describe(groupId: String) -> (error: KafkaErrorCode, summary: Summary?) {
        switch owner(groupId) {
        case .unavailable(let code): return (code, nil)
        case .hosted(_, let hosted):
            if hosted.consumerGroups[groupId] != nil { return (.groupIdNotFound, nil) }
            guard let group = hosted.groups[groupId] else {
                return (.none, Summary(groupId: groupId, state: .dead, protocolType: "", protocolName: "", members: []))
            }
            return (.none, Self.summary(group))
        }
    }

    /// ListGroups: every group coordinated here, sorted by id; COORDINATOR_LOAD_IN_PROGRESS while a
    /// partition is still loading.
    public func list() -> (error: KafkaErrorCode, groups: [Summary]) {
        var error = KafkaErrorCode.none
        var groups: [Summary] = []
        for hosted in offsetsPartitions.values {
            guard hosted.loaded else {
                error = .coordinatorLoadInProgress
                continue
            }
            groups += hosted.groups.values.filter { $0.state != .dead && hosted.consumerGroups[$0.groupId] == nil }.map(Self.summary)
            groups += hosted.consumerGroups.values.map(Self.summary)
        }
        return (error, groups.sorted { $0.groupId < $1.groupId })
    }

    /// DeleteGroups of one group: only an empty group goes; its offsets and metadata get tombstones.
    public func delete(groupId: String) async -> KafkaErrorCode {
        let partition: Int32
        let hosted: OffsetsPartition
        switch owner(groupId) {
        case .unavailable(let code): return code
        case .hosted(let p, let s): (partition, hosted) = (p, s)
        }
        guard var group = hosted.groups[groupId], group.state != .dead else { return .groupIdNotFound }
        guard group.state == .empty else { return .nonEmptyGroup }
        let consumer = hosted.consumerGroups[groupId]
        if let consumer, !consumer.members.isEmpty { return .nonEmptyGroup }
        group.markDead(now: context.now())
        hosted.groups[groupId] = group
        let records = group.offsets.keys.sorted().map { GroupRecord.offset(group: groupId, key: $0, value: nil) }
            + [GroupRecord.metadata(group: groupId, value: nil)] + (consumer == nil ? [] : [GroupRecord.consumerGroup(group: groupId, value: nil)])
        let result = await append(records, partition: partition)
        if offsetsPartitions[partition] === hosted, hosted.groups[groupId]?.state == .dead {
            hosted.groups[groupId] = nil
            if hosted.consumerGroups[groupId]?.members.isEmpty == true { hosted.consumerGroups[groupId] = nil }
        }
        return Self.commitError(result.errorCode)
    }
}
