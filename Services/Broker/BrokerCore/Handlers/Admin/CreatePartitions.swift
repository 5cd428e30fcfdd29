import ClusterMetadata
import KafkaProtocol

extension AdminHandlers {
    /// CreatePartitions (v0-3): partition counts only grow. Manual assignments are checked as Kafka
    /// checks them (one per new partition, registered brokers) and leaders are then placed by Floe.
    public func createPartitions(_ request: CreatePartitionsRequest, version: Int16) async -> CreatePartitionsResponse {
        var counts: [String: Int] = [:]
        for topic in request.topics { counts[topic.name, default: 0] += 1 }
        let state = await metadata.state
        var results: [CreatePartitionsResponse.CreatePartitionsTopicResult] = []
        var changes: [PartitionCountChange] = []
        var changeSlots: [Int] = []
        for topic in request.topics where (counts[topic.name] ?? 0) == 1 {
            if let refusal = checkPartitionGrowth(topic, state: state) {
                results.append(Self.partitionResult(topic.name, refusal.code, refusal.message))
                continue
            }
            changeSlots.append(results.count)
            changes.append(PartitionCountChange(topic: topic.name, count: topic.count))
            results.append(Self.partitionResult(topic.name, 0, nil))
        }
        if !changes.isEmpty {
            let outcome = await execute(.createPartitions(changes), validateOnly: request.validateOnly, waitMs: request.timeoutMs)
            for (offset, result) in Self.itemResults(outcome, count: changes.count).enumerated() {
                results[changeSlots[offset]].errorCode = result.code
                results[changeSlots[offset]].errorMessage = result.code == 0 ? nil : result.message
                if result.code == 0, !request.validateOnly {
                    logger.info(
                        "added partitions", metadata: ["topic": "\(changes[offset].topic)", "partitions": "\(changes[offset].count)"])
                }
            }
        }
        var reported: Set<String> = []
        for topic in request.topics where (counts[topic.name] ?? 0) > 1 && reported.insert(topic.name).inserted {
            results.append(Self.partitionResult(topic.name, KafkaErrorCode.invalidRequest.rawValue, "Duplicate topic name."))
        }
        var response = CreatePartitionsResponse()
        response.results = results
        return response
    }

    func checkPartitionGrowth(_ topic: CreatePartitionsRequest.CreatePartitionsTopic, state: MetadataState) -> Refusal? {
        guard let current = state.topics[topic.name] else {
            return Refusal(.unknownTopicOrPartition, "The topic '\(topic.name)' does not exist.")
        }
        let existing = Int32(clamping: current.partitions.count)
        if topic.count == existing {
            return Refusal(.invalidPartitions, "Topic already has \(existing) partition(s).")
        }
        if topic.count < existing {
            return Refusal(
                .invalidPartitions,
                "The topic \(topic.name) currently has \(existing) partition(s); \(topic.count) would not be an increase.")
        }
        if let assignments = topic.assignments {
            let additional = Int(topic.count) - Int(existing)
            guard assignments.count == additional else {
                return Refusal(
                    .invalidReplicaAssignment,
                    "Attempted to add \(additional) additional partition(s), but only \(assignments.count) assignment(s) were specified.")
            }
            for assignment in assignments {
                if let problem = Self.validateAssignment(assignment.brokerIds, state: state) {
                    return Refusal(.invalidReplicaAssignment, problem)
                }
            }
        }
        return nil
    }

    static func partitionResult(_ name: String, _ code: Int16, _ message: String?) -> CreatePartitionsResponse.CreatePartitionsTopicResult {
        var result = CreatePartitionsResponse.CreatePartitionsTopicResult()
        result.name = name
        result.errorCode = code
        result.errorMessage = message
        return result
    }
}
