import ClusterMetadata
import ControllerClient
import KafkaProtocol

/// Metadata: live brokers, and topics with their partitions' leaders and epochs, from the broker's
/// metadata image. Missing topics are created when both the client and the broker allow it.
///
/// With zone routing, a client of zone Z (`clientZone`) sees Z's brokers only, and a partition led
/// from another zone as led by one of Z's brokers (`MetadataState.zoneLeader`) at its real leader
/// epoch: that broker routes its produces to the leader and serves its committed data.
enum MetadataHandler {
    static func handle(_ request: MetadataRequest, version: Int16, context: BrokerContext, clientZone: String? = nil) async -> MetadataResponse {
        var state = await context.metadata.state
        // Before v1 an empty list meant "all topics"; from v1 on, null does. From v12 (the first version
        // whose answer may carry a null name) a topic may be asked for by id alone: answered under its
        // name, or UNKNOWN_TOPIC_ID.
        var unknownIds: [KafkaUUID] = []
        let requested: [String]? = {
            guard let topics = request.topics else { return nil }
            if version == 0 && topics.isEmpty { return nil }
            return topics.compactMap { topic in
                guard version >= 12, topic.name == nil || topic.name == "", topic.topicId != .zero else { return topic.name ?? "" }
                guard let record = state.topic(id: topic.topicId) else {
                    unknownIds.append(topic.topicId)
                    return nil
                }
                return record.name
            }
        }()
        let allowAutoCreate = version < 4 ? true : request.allowAutoTopicCreation
        var autoCreateErrors: [String: Int16] = [:]
        if let requested, allowAutoCreate, context.settings.autoCreateTopics {
            let missing = requested.filter { state.topics[$0] == nil && !$0.isEmpty }
            if !missing.isEmpty {
                autoCreateErrors = await context.autoCreate(missing)
                state = await context.metadata.state
            }
        }
        var response = MetadataResponse()
        response.clusterId = context.settings.clusterId
        let zone = context.settings.zoneRouting ? clientZone ?? context.settings.zone : nil
        let zoneBrokers = zone.map { state.activeBrokers(inZone: $0) } ?? []
        let brokers = zoneBrokers.isEmpty ? state.activeBrokers : zoneBrokers
        response.controllerId = brokers.first?.id ?? -1
        response.brokers = brokers.compactMap { node in
            guard let endpoint = try? parseEndpoint(node.registration.listener) else { return nil }
            var broker = MetadataResponse.MetadataResponseBroker()
            broker.nodeId = node.id
            broker.host = endpoint.host
            broker.port = Int32(endpoint.port)
            broker.rack = node.zone
            return broker
        }
        let names = requested ?? state.topicNames
        response.topics = names.map { name in
            var topic = MetadataResponse.MetadataResponseTopic()
            topic.name = name
            topic.topicAuthorizedOperations = Int32.min
            guard let record = state.topics[name] else {
                if let code = autoCreateErrors[name], code != 0 {
                    topic.errorCode = code
                } else if MetadataState.validateTopicName(name) == nil {
                    topic.errorCode = allowAutoCreate && context.settings.autoCreateTopics
                        ? KafkaErrorCode.leaderNotAvailable.rawValue : KafkaErrorCode.unknownTopicOrPartition.rawValue
                } else {
                    topic.errorCode = KafkaErrorCode.invalidTopicException.rawValue
                }
                return topic
            }
            topic.topicId = record.topicId
            topic.isInternal = record.isInternal
            topic.partitions = record.partitions.enumerated().map { index, partition in
                var out = MetadataResponse.MetadataResponsePartition()
                out.partitionIndex = Int32(index)
                out.leaderId = partition.leader
                out.leaderEpoch = partition.leaderEpoch
                if partition.leader < 0 || state.nodes[partition.leader]?.state != .active {
                    out.errorCode = KafkaErrorCode.leaderNotAvailable.rawValue
                    out.leaderId = -1
                    out.replicaNodes = partition.leader >= 0 ? [partition.leader] : []
                    out.isrNodes = []
                } else {
                    let shown = zoneBrokers.isEmpty ? partition.leader
                        : state.zoneLeader(of: PartitionKey(topic: name, partition: Int32(index)), zone: zone ?? "") ?? partition.leader
                    out.leaderId = shown
                    out.replicaNodes = [shown]
                    out.isrNodes = [shown]
                }
                return out
            }
            return topic
        }
        response.topics += unknownIds.map { id in
            var topic = MetadataResponse.MetadataResponseTopic()
            topic.name = nil
            topic.topicId = id
            topic.errorCode = KafkaErrorCode.unknownTopicId.rawValue
            topic.topicAuthorizedOperations = Int32.min
            return topic
        }
        response.clusterAuthorizedOperations = Int32.min
        return response
    }
}
