import KafkaProtocol

/// The consumer protocol's APIs (KIP-848): ConsumerGroupHeartbeat and ConsumerGroupDescribe, turned
/// into `GroupCoordinator` calls and back into responses.
public enum ConsumerGroupHandlers {
    /// ConsumerGroupHeartbeat v0–1 (v1: the member brings its own id and may subscribe by regex).
    public static func heartbeat(
        _ request: ConsumerGroupHeartbeatRequest, version: Int16, coordinator: GroupCoordinator, clientId: String?, clientHost: String
    ) async -> ConsumerGroupHeartbeatResponse {
        if version >= 1 && request.memberId.isEmpty {
            return response(ConsumerHeartbeatOutcome(error: .invalidRequest, message: "MemberId can't be empty."))
        }
        if version == 0 && request.memberEpoch == 0 && !request.memberId.isEmpty {
            return response(ConsumerHeartbeatOutcome(error: .invalidRequest, message: "MemberId must be empty when joining with version 0."))
        }
        let input = ConsumerHeartbeat(
            memberId: request.memberId, memberEpoch: request.memberEpoch, instanceId: request.instanceId, rackId: request.rackId,
            rebalanceTimeoutMs: request.rebalanceTimeoutMs, subscribedTopicNames: request.subscribedTopicNames,
            subscribedTopicRegex: version >= 1 ? request.subscribedTopicRegex : nil, serverAssignor: request.serverAssignor,
            ownedPartitions: request.topicPartitions.map { topics in
                topics.flatMap { topic in topic.partitions.map { TopicIdPartition(topicId: topic.topicId, partition: $0) } }
            },
            clientId: clientId ?? "", clientHost: clientHost)
        return response(await coordinator.consumerHeartbeat(groupId: request.groupId, request: input))
    }

    static func response(_ outcome: ConsumerHeartbeatOutcome) -> ConsumerGroupHeartbeatResponse {
        var response = ConsumerGroupHeartbeatResponse()
        response.errorCode = outcome.error.rawValue
        response.errorMessage = outcome.error == .none ? nil : outcome.message ?? "\(outcome.error)"
        response.memberId = outcome.memberId
        response.memberEpoch = outcome.memberEpoch
        response.heartbeatIntervalMs = outcome.heartbeatIntervalMs
        if let assignment = outcome.assignment {
            var out = ConsumerGroupHeartbeatResponse.Assignment()
            out.topicPartitions = sortedTopics(assignment).map { topic, partitions in
                var item = ConsumerGroupHeartbeatResponse.TopicPartitions()
                item.topicId = topic
                item.partitions = partitions
                return item
            }
            response.assignment = out
        }
        return response
    }

    /// An assignment's topics in id order, each with its partitions sorted.
    static func sortedTopics(_ assignment: MemberAssignment) -> [(KafkaUUID, [Int32])] {
        assignment.keys.sorted { ($0.high, $0.low) < ($1.high, $1.low) }.map { ($0, (assignment[$0] ?? []).sorted()) }
    }

    /// ConsumerGroupDescribe v0.
    public static func describe(_ request: ConsumerGroupDescribeRequest, version: Int16, coordinator: GroupCoordinator) async -> ConsumerGroupDescribeResponse {
        let catalog = await coordinator.topicCatalog()
        var response = ConsumerGroupDescribeResponse()
        for groupId in request.groupIds {
            let (error, message, group) = await coordinator.describeConsumerGroup(groupId)
            var out = ConsumerGroupDescribeResponse.DescribedGroup()
            out.groupId = groupId
            out.errorCode = error.rawValue
            out.errorMessage = message
            if let group {
                out.groupState = group.state
                out.groupEpoch = group.groupEpoch
                out.assignmentEpoch = group.assignmentEpoch
                out.assignorName = group.assignorName
                out.members = group.members.map { description in
                    let member = description.member
                    var described = ConsumerGroupDescribeResponse.Member()
                    described.memberId = member.memberId
                    described.instanceId = member.instanceId
                    described.rackId = member.rackId
                    described.memberEpoch = member.memberEpoch
                    described.clientId = member.clientId
                    described.clientHost = member.clientHost
                    described.subscribedTopicNames = member.subscribedTopicNames
                    described.subscribedTopicRegex = member.subscribedTopicRegex
                    described.assignment = describedAssignment(member.assigned, catalog: catalog)
                    described.targetAssignment = describedAssignment(description.target, catalog: catalog)
                    return described
                }
            }
            response.groups.append(out)
        }
        return response
    }

    static func describedAssignment(_ assignment: MemberAssignment, catalog: TopicCatalog) -> ConsumerGroupDescribeResponse.Assignment {
        var out = ConsumerGroupDescribeResponse.Assignment()
        out.topicPartitions = sortedTopics(assignment).map { topic, partitions in
            var item = ConsumerGroupDescribeResponse.TopicPartitions()
            item.topicId = topic
            item.topicName = catalog.byId[topic]?.name ?? ""
            item.partitions = partitions
            return item
        }
        return out
    }
}
