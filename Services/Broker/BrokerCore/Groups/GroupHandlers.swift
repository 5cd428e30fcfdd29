import ClusterMetadata
import ControllerClient
import KafkaProtocol
import NIOCore

/// The group and offset APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
/// OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups and DeleteGroups. They turn
/// requests into `GroupCoordinator` calls and its answers into responses at the request's version.
public enum GroupHandlers {
    // MARK: FindCoordinator

    /// FindCoordinator v0–4: the leader of the group's `__consumer_offsets` partition.
    /// With zone routing, a client is sent to a broker of its zone (`clientZone`) when the coordinator is
    /// in another one; that broker forwards the group's requests (`GroupForwarding`).
    public static func findCoordinator(
        _ request: FindCoordinatorRequest, version: Int16, context: BrokerContext, clientZone: String? = nil
    ) async -> FindCoordinatorResponse {
        let keys = version >= 4 ? request.coordinatorKeys : [request.key]
        var state = await context.metadata.state
        if request.keyType == 0, state.topics[CoordinatorPlacement.offsetsTopic] == nil, keys.contains(where: { !$0.isEmpty }) {
            // The first group client of a cluster creates the topic; it retries until a leader is up.
            _ = await context.autoCreate([CoordinatorPlacement.offsetsTopic])
            state = await context.metadata.state
        }
        let zone = context.settings.zoneRouting ? clientZone ?? context.settings.zone : nil
        let answers = keys.map { locate($0, keyType: request.keyType, state: state, zone: zone) }
        var response = FindCoordinatorResponse()
        if version >= 4 {
            response.coordinators = zip(keys, answers).map { key, answer in
                var coordinator = FindCoordinatorResponse.Coordinator()
                coordinator.key = key
                coordinator.nodeId = answer.nodeId
                coordinator.host = answer.host
                coordinator.port = answer.port
                coordinator.errorCode = answer.error.rawValue
                coordinator.errorMessage = answer.error == .none ? nil : answer.message
                return coordinator
            }
            return response
        }
        let answer = answers.first ?? (.invalidRequest, "no key", -1, "", -1)
        response.errorCode = answer.error.rawValue
        response.nodeId = answer.nodeId
        response.host = answer.host
        response.port = answer.port
        if version >= 1 { response.errorMessage = answer.error == .none ? nil : answer.message }
        return response
    }

    typealias Located = (error: KafkaErrorCode, message: String, nodeId: Int32, host: String, port: Int32)

    static func locate(_ key: String, keyType: Int8, state: MetadataState, zone: String? = nil) -> Located {
        switch keyType {
        case 0: break
        case 1: return (.coordinatorNotAvailable, "transactions are not supported", -1, "", -1)
        default: return (.invalidRequest, "unknown key type \(keyType)", -1, "", -1)
        }
        guard !key.isEmpty else { return (.invalidRequest, "empty group id", -1, "", -1) }
        guard let topic = state.topics[CoordinatorPlacement.offsetsTopic], !topic.partitions.isEmpty else {
            return (.coordinatorNotAvailable, "the offsets topic is being created", -1, "", -1)
        }
        let partition = Int(CoordinatorPlacement.partition(for: key, partitionCount: Int32(clamping: topic.partitions.count)))
        var leader = topic.partitions[partition].leader
        if let zone, leader >= 0, let shown = state.zoneLeader(of: PartitionKey(topic: CoordinatorPlacement.offsetsTopic, partition: Int32(partition)), zone: zone) {
            leader = shown
        }
        guard leader >= 0, let node = state.nodes[leader], node.kind == .broker, node.state == .active,
              let endpoint = try? parseEndpoint(node.registration.listener) else {
            return (.coordinatorNotAvailable, "the coordinator is not available", -1, "", -1)
        }
        return (.none, "", leader, endpoint.host, Int32(endpoint.port))
    }

    // MARK: Membership

    /// JoinGroup v0–9.
    public static func joinGroup(
        _ request: JoinGroupRequest, version: Int16, coordinator: GroupCoordinator, clientId: String?, clientHost: String
    ) async -> JoinGroupResponse {
        let input = JoinInput(
            memberId: request.memberId, groupInstanceId: version >= 5 ? request.groupInstanceId : nil, clientId: clientId ?? "",
            clientHost: clientHost, sessionTimeoutMs: request.sessionTimeoutMs,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalanceTimeoutMs: version >= 1 ? request.rebalanceTimeoutMs : request.sessionTimeoutMs,
            protocolType: request.protocolType,
            protocols: request.protocols.map { GroupProtocol(name: $0.name, metadata: $0.metadata) },
            requireKnownMemberId: version >= 4, supportsSkipAssignment: version >= 9)
        return joinResponse(await coordinator.join(groupId: request.groupId, input: input), version: version)
    }

    /// The JoinGroup response for `outcome` at `version`.
    static func joinResponse(_ outcome: JoinOutcome, version: Int16) -> JoinGroupResponse {
        var response = JoinGroupResponse()
        response.errorCode = outcome.error.rawValue
        response.generationId = outcome.generationId
        response.protocolType = version >= 7 ? outcome.protocolType : nil
        response.protocolName = version >= 7 ? outcome.protocolName : (outcome.protocolName ?? "")
        response.leader = outcome.leaderId
        response.memberId = outcome.memberId
        response.skipAssignment = version >= 9 && outcome.skipAssignment
        response.members = outcome.members.map { member in
            var out = JoinGroupResponse.JoinGroupResponseMember()
            out.memberId = member.memberId
            out.groupInstanceId = version >= 5 ? member.groupInstanceId : nil
            out.metadata = member.metadata
            return out
        }
        return response
    }

    /// SyncGroup v0–5.
    public static func syncGroup(_ request: SyncGroupRequest, version: Int16, coordinator: GroupCoordinator) async -> SyncGroupResponse {
        let outcome = await coordinator.sync(
            groupId: request.groupId, memberId: request.memberId, groupInstanceId: version >= 3 ? request.groupInstanceId : nil,
            generationId: request.generationId, protocolType: version >= 5 ? request.protocolType : nil,
            protocolName: version >= 5 ? request.protocolName : nil,
            assignments: request.assignments.map { ($0.memberId, $0.assignment) })
        return syncResponse(outcome, version: version)
    }

    /// The SyncGroup response for `outcome` at `version`.
    static func syncResponse(_ outcome: SyncOutcome, version: Int16) -> SyncGroupResponse {
        var response = SyncGroupResponse()
        response.errorCode = outcome.error.rawValue
        response.assignment = outcome.assignment
        if version >= 5 {
            response.protocolType = outcome.protocolType
            response.protocolName = outcome.protocolName
        }
        return response
    }

    /// Heartbeat v0–4.
    public static func heartbeat(_ request: HeartbeatRequest, version: Int16, coordinator: GroupCoordinator) async -> HeartbeatResponse {
        var response = HeartbeatResponse()
        response.errorCode = await coordinator.heartbeat(
            groupId: request.groupId, memberId: request.memberId, groupInstanceId: version >= 3 ? request.groupInstanceId : nil,
            generationId: request.generationId
        ).rawValue
        return response
    }

    /// LeaveGroup v0–5 (v3+ batches members).
    public static func leaveGroup(_ request: LeaveGroupRequest, version: Int16, coordinator: GroupCoordinator) async -> LeaveGroupResponse {
        let leaving: [(memberId: String, groupInstanceId: String?)] =
            version >= 3 ? request.members.map { ($0.memberId, $0.groupInstanceId) } : [(request.memberId, nil)]
        let (error, results) = await coordinator.leave(groupId: request.groupId, members: leaving)
        var response = LeaveGroupResponse()
        if version >= 3 {
            response.errorCode = error.rawValue
            if error == .none {
                response.members = zip(leaving, results).map { member, code in
                    var out = LeaveGroupResponse.MemberResponse()
                    out.memberId = member.memberId
                    out.groupInstanceId = member.groupInstanceId
                    out.errorCode = code.rawValue
                    return out
                }
            }
        } else {
            response.errorCode = (error != .none ? error : results.first { $0 != .none } ?? .none).rawValue
        }
        return response
    }

    // MARK: Offsets

    /// OffsetCommit v2–9: partitions of unknown topics or with oversized metadata fail alone; the rest
    /// are committed together and acknowledged once durable.
    public static func offsetCommit(
        _ request: OffsetCommitRequest, version: Int16, coordinator: GroupCoordinator, context: BrokerContext
    ) async -> OffsetCommitResponse {
        let state = await context.metadata.state
        let now = context.now()
        let maxMetadata = coordinator.config.maxOffsetMetadataBytes
        var verdicts: [[KafkaErrorCode?]] = []
        var accepted: [(OffsetKey, CommittedOffset)] = []
        for topic in request.topics {
            let record = state.topics[topic.name]
            verdicts.append(
                topic.partitions.map { partition in
                    guard let record, partition.partitionIndex >= 0, Int(partition.partitionIndex) < record.partitions.count else {
                        return .unknownTopicOrPartition
                    }
                    if let metadata = partition.committedMetadata, metadata.utf8.count > maxMetadata { return .offsetMetadataTooLarge }
                    accepted.append(
                        (OffsetKey(topic: topic.name, partition: partition.partitionIndex),
                         CommittedOffset(
                            offset: partition.committedOffset, leaderEpoch: version >= 6 ? partition.committedLeaderEpoch : -1,
                            metadata: partition.committedMetadata, commitTimestamp: now)))
                    return nil
                })
        }
        let error = await coordinator.commit(
            groupId: request.groupId, memberId: request.memberId, groupInstanceId: version >= 7 ? request.groupInstanceId : nil,
            generationId: request.generationIdOrMemberEpoch, offsets: accepted, apiVersion: version)
        var response = OffsetCommitResponse()
        response.topics = zip(request.topics, verdicts).map { topic, codes in
            var out = OffsetCommitResponse.OffsetCommitResponseTopic()
            out.name = topic.name
            out.partitions = zip(topic.partitions, codes).map { partition, code in
                var result = OffsetCommitResponse.OffsetCommitResponsePartition()
                result.partitionIndex = partition.partitionIndex
                result.errorCode = (code ?? error).rawValue
                return result
            }
            return out
        }
        return response
    }

    /// OffsetFetch v1–9 (v8+ several groups). `require_stable` needs no work: there are no
    /// transactional commits to wait for.
    public static func offsetFetch(_ request: OffsetFetchRequest, version: Int16, coordinator: GroupCoordinator) async -> OffsetFetchResponse {
        var response = OffsetFetchResponse()
        if version >= 8 {
            for group in request.groups {
                let keys = group.topics.map { topics in topics.flatMap { topic in topic.partitionIndexes.map { OffsetKey(topic: topic.name, partition: $0) } } }
                let (error, offsets) = await coordinator.fetchOffsets(
                    groupId: group.groupId, partitions: keys, memberId: version >= 9 ? group.memberId ?? "" : "",
                    memberEpoch: version >= 9 ? group.memberEpoch : -1)
                var out = OffsetFetchResponse.OffsetFetchResponseGroup()
                out.groupId = group.groupId
                out.errorCode = error.rawValue
                out.topics = grouped(offsets).map { name, partitions in
                    var topic = OffsetFetchResponse.OffsetFetchResponseTopics()
                    topic.name = name
                    topic.partitions = partitions.map { key, value in
                        var partition = OffsetFetchResponse.OffsetFetchResponsePartitions()
                        partition.partitionIndex = key.partition
                        partition.committedOffset = value?.offset ?? -1
                        partition.committedLeaderEpoch = value?.leaderEpoch ?? -1
                        partition.metadata = value?.metadata ?? ""
                        return partition
                    }
                    return topic
                }
                response.groups.append(out)
            }
            return response
        }
        let keys = request.topics.map { topics in topics.flatMap { topic in topic.partitionIndexes.map { OffsetKey(topic: topic.name, partition: $0) } } }
        var (error, offsets) = await coordinator.fetchOffsets(groupId: request.groupId, partitions: keys)
        if error != .none {
            if version >= 2 {
                response.errorCode = error.rawValue
                return response
            }
            // v1 has no group-level error: every requested partition carries it.
            offsets = (keys ?? []).map { ($0, nil) }
        }
        response.topics = grouped(offsets).map { name, partitions in
            var topic = OffsetFetchResponse.OffsetFetchResponseTopic()
            topic.name = name
            topic.partitions = partitions.map { key, value in
                var partition = OffsetFetchResponse.OffsetFetchResponsePartition()
                partition.partitionIndex = key.partition
                partition.committedOffset = value?.offset ?? -1
                if version >= 5 { partition.committedLeaderEpoch = value?.leaderEpoch ?? -1 }
                partition.metadata = value?.metadata ?? ""
                partition.errorCode = error.rawValue
                return partition
            }
            return topic
        }
        return response
    }

    /// Offsets grouped by topic, topics in first-seen order.
    static func grouped(_ offsets: [(OffsetKey, CommittedOffset?)]) -> [(String, [(OffsetKey, CommittedOffset?)])] {
        var order: [String] = []
        var byTopic: [String: [(OffsetKey, CommittedOffset?)]] = [:]
        for item in offsets {
            if byTopic[item.0.topic] == nil { order.append(item.0.topic) }
            byTopic[item.0.topic, default: []].append(item)
        }
        return order.map { ($0, byTopic[$0] ?? []) }
    }

    /// OffsetDelete v0.
    public static func offsetDelete(_ request: OffsetDeleteRequest, version: Int16, coordinator: GroupCoordinator) async -> OffsetDeleteResponse {
        let keys = request.topics.flatMap { topic in topic.partitions.map { OffsetKey(topic: topic.name, partition: $0.partitionIndex) } }
        let (error, results) = await coordinator.deleteOffsets(groupId: request.groupId, partitions: keys)
        var response = OffsetDeleteResponse()
        response.errorCode = error.rawValue
        guard error == .none else { return response }
        var index = 0
        response.topics = request.topics.map { topic in
            var out = OffsetDeleteResponse.OffsetDeleteResponseTopic()
            out.name = topic.name
            out.partitions = topic.partitions.map { partition in
                var result = OffsetDeleteResponse.OffsetDeleteResponsePartition()
                result.partitionIndex = partition.partitionIndex
                result.errorCode = (index < results.count ? results[index] : .unknownServerError).rawValue
                index += 1
                return result
            }
            return out
        }
        return response
    }

    // MARK: Administration

    /// ListGroups v0–5 (states filter v4+, types filter v5+).
    public static func listGroups(_ request: ListGroupsRequest, version: Int16, coordinator: GroupCoordinator) async -> ListGroupsResponse {
        let (error, groups) = await coordinator.list()
        return listResponse(request, error: error, groups: groups, version: version)
    }

    /// The ListGroups response at `version`: `groups` filtered by the request's states and types.
    static func listResponse(
        _ request: ListGroupsRequest, error: KafkaErrorCode, groups: [GroupCoordinator.Summary], version: Int16
    ) -> ListGroupsResponse {
        let states = Set((version >= 4 ? request.statesFilter : []).map { $0.lowercased() })
        let types = Set((version >= 5 ? request.typesFilter : []).map { $0.lowercased() })
        var response = ListGroupsResponse()
        response.errorCode = error.rawValue
        response.groups = groups.filter {
            (states.isEmpty || states.contains($0.stateName.lowercased())) && (types.isEmpty || types.contains($0.groupType))
        }.map { group in
            var out = ListGroupsResponse.ListedGroup()
            out.groupId = group.groupId
            out.protocolType = group.protocolType
            if version >= 4 { out.groupState = group.stateName }
            if version >= 5 { out.groupType = group.groupType }
            return out
        }
        return response
    }

    /// DescribeGroups v0–5.
    public static func describeGroups(_ request: DescribeGroupsRequest, version: Int16, coordinator: GroupCoordinator) async -> DescribeGroupsResponse {
        var response = DescribeGroupsResponse()
        for groupId in request.groups {
            let (error, summary) = await coordinator.describe(groupId: groupId)
            response.groups.append(describedGroup(groupId, error: error, summary: summary, version: version))
        }
        return response
    }

    /// One group of a DescribeGroups response at `version`.
    static func describedGroup(
        _ groupId: String, error: KafkaErrorCode, summary: GroupCoordinator.Summary?, version: Int16
    ) -> DescribeGroupsResponse.DescribedGroup {
        var out = DescribeGroupsResponse.DescribedGroup()
        out.groupId = groupId
        out.errorCode = error.rawValue
        if let summary {
            out.groupState = summary.state.rawValue
            out.protocolType = summary.protocolType
            out.protocolData = summary.protocolName
            out.members = summary.members.map { member in
                var described = DescribeGroupsResponse.DescribedGroupMember()
                described.memberId = member.memberId
                described.groupInstanceId = version >= 4 ? member.groupInstanceId : nil
                described.clientId = member.clientId
                described.clientHost = member.clientHost
                described.memberMetadata = member.metadata
                described.memberAssignment = member.assignment
                return described
            }
        }
        return out
    }

    /// DeleteGroups v0–2: only empty groups are deleted.
    public static func deleteGroups(_ request: DeleteGroupsRequest, version: Int16, coordinator: GroupCoordinator) async -> DeleteGroupsResponse {
        var response = DeleteGroupsResponse()
        for groupId in request.groupsNames {
            var result = DeleteGroupsResponse.DeletableGroupResult()
            result.groupId = groupId
            result.errorCode = await coordinator.delete(groupId: groupId).rawValue
            response.results.append(result)
        }
        return response
    }
}
