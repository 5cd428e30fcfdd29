import ClusterMetadata
import KafkaProtocol

extension AdminHandlers {
    /// AlterPartitionReassignments (v0): records or cancels (null replicas) moves. Floe keeps one
    /// durable copy, so a partition's replica list names the broker that will lead it first.
    public func alterPartitionReassignments(
        _ request: AlterPartitionReassignmentsRequest, version: Int16
    ) async -> AlterPartitionReassignmentsResponse {
        var requests: [ReassignmentRequest] = []
        for topic in request.topics {
            for partition in topic.partitions {
                requests.append(ReassignmentRequest(topic: topic.name, partition: partition.partitionIndex, replicas: partition.replicas))
            }
        }
        var response = AlterPartitionReassignmentsResponse()
        response.errorMessage = nil
        var itemResults: [(code: Int16, message: String?)] = []
        if !requests.isEmpty {
            let outcome = await execute(.alterReassignments(requests), validateOnly: false, waitMs: request.timeoutMs)
            if case .failed(let code, let message) = outcome {
                response.errorCode = code
                response.errorMessage = message
            }
            itemResults = Self.itemResults(outcome, count: requests.count)
        }
        var index = 0
        response.responses = request.topics.map { topic in
            var topicResponse = AlterPartitionReassignmentsResponse.ReassignableTopicResponse()
            topicResponse.name = topic.name
            topicResponse.partitions = topic.partitions.map { partition in
                var result = AlterPartitionReassignmentsResponse.ReassignablePartitionResponse()
                result.partitionIndex = partition.partitionIndex
                if index < itemResults.count {
                    result.errorCode = itemResults[index].code
                    result.errorMessage = itemResults[index].code == 0 ? nil : itemResults[index].message
                }
                index += 1
                return result
            }
            return topicResponse
        }
        return response
    }

    /// ListPartitionReassignments (v0): pending moves, all of them or those of the requested partitions.
    public func listPartitionReassignments(
        _ request: ListPartitionReassignmentsRequest, version: Int16
    ) async -> ListPartitionReassignmentsResponse {
        let state = await metadata.state
        var wanted: Set<PartitionKey>?
        if let topics = request.topics {
            var keys: Set<PartitionKey> = []
            for topic in topics {
                for partition in topic.partitionIndexes { keys.insert(PartitionKey(topic: topic.name, partition: partition)) }
            }
            wanted = keys
        }
        var topics: [ListPartitionReassignmentsResponse.OngoingTopicReassignment] = []
        for pending in state.pendingReassignments {
            let key = PartitionKey(topic: pending.topic, partition: pending.partition)
            if let wanted, !wanted.contains(key) { continue }
            let original: [Int32] = state.partition(key).map { $0.leader >= 0 ? [$0.leader] : [] } ?? []
            var entry = ListPartitionReassignmentsResponse.OngoingPartitionReassignment()
            entry.partitionIndex = pending.partition
            // Kafka lists the union of target and original replicas while a move is under way.
            entry.replicas = pending.replicas + original.filter { !pending.replicas.contains($0) }
            entry.addingReplicas = pending.replicas.filter { !original.contains($0) }
            entry.removingReplicas = original.filter { !pending.replicas.contains($0) }
            if topics.last?.name == pending.topic {
                topics[topics.count - 1].partitions.append(entry)
            } else {
                var topic = ListPartitionReassignmentsResponse.OngoingTopicReassignment()
                topic.name = pending.topic
                topic.partitions = [entry]
                topics.append(topic)
            }
        }
        var response = ListPartitionReassignmentsResponse()
        response.errorMessage = nil
        response.topics = topics
        return response
    }
}
