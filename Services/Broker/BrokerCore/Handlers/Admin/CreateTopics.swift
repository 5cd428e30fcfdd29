import ClusterMetadata
import KafkaProtocol

extension AdminHandlers {
    /// Topics Kafka creates for its own use, with the settings Kafka gives them.
    static let internalTopics: [String: (partitions: Int32, configs: [String: String])] = [
        "__consumer_offsets": (50, ["cleanup.policy": "compact", "compression.type": "producer", "segment.bytes": "104857600"]),
        "__transaction_state": (50, ["cleanup.policy": "compact", "min.insync.replicas": "1", "segment.bytes": "104857600"]),
    ]

    /// CreateTopics (v0-7). Duplicated names get INVALID_REQUEST once each, as Kafka answers them.
    public func createTopics(_ request: CreateTopicsRequest, version: Int16) async -> CreateTopicsResponse {
        var response = CreateTopicsResponse()
        var seen: [String: Int] = [:]
        for topic in request.topics { seen[topic.name, default: 0] += 1 }
        let duplicates = request.topics.map(\.name).filter { (seen[$0] ?? 0) > 1 }

        let state = await metadata.state
        var results: [CreateTopicsResponse.CreatableTopicResult] = []
        var specs: [TopicSpec] = []
        var specSlots: [Int] = []
        for topic in request.topics where (seen[topic.name] ?? 0) == 1 {
            switch checkCreatable(topic, state: state) {
            case .failure(let failure):
                results.append(Self.failedTopic(topic.name, failure.code, failure.message, version: version))
            case .success(let spec):
                specSlots.append(results.count)
                specs.append(spec)
                results.append(CreateTopicsResponse.CreatableTopicResult())
            }
        }

        if !specs.isEmpty {
            let outcome = await execute(.createTopics(specs), validateOnly: request.validateOnly, waitMs: request.timeoutMs)
            let itemResults = Self.itemResults(outcome, count: specs.count)
            let after = request.validateOnly ? state : await metadata.state
            for (offset, spec) in specs.enumerated() {
                let (code, message) = itemResults[offset]
                if code != 0 {
                    results[specSlots[offset]] = Self.failedTopic(spec.name, code, message, version: version)
                } else {
                    let configs = after.topics[spec.name]?.configs ?? spec.configs
                    results[specSlots[offset]] = createdTopic(
                        spec, configs: configs, assignedId: !request.validateOnly, version: version)
                    if !request.validateOnly {
                        logger.info(
                            "created topic",
                            metadata: ["topic": "\(spec.name)", "partitions": "\(spec.partitionCount)", "topic.id": "\(spec.topicId)"])
                    }
                }
            }
        }

        var reported: Set<String> = []
        for name in duplicates where reported.insert(name).inserted {
            results.append(Self.failedTopic(name, KafkaErrorCode.invalidRequest.rawValue, "Duplicate topic name.", version: version))
        }
        response.topics = results
        return response
    }

    struct Refusal: Error {
        var code: Int16
        var message: String

        init(_ code: KafkaErrorCode, _ message: String) {
            self.code = code.rawValue
            self.message = message
        }
    }

    /// Everything Kafka checks before it asks the controller, turned into a spec for the controller.
    func checkCreatable(_ topic: CreateTopicsRequest.CreatableTopic, state: MetadataState) -> Result<TopicSpec, Refusal> {
        if let error = MetadataState.validateTopicName(topic.name) {
            return .failure(Refusal(.invalidTopicException, Self.illegalTopicMessage(topic.name, error)))
        }
        let partitionCount: Int32
        if !topic.assignments.isEmpty {
            guard topic.numPartitions == -1, topic.replicationFactor == -1 else {
                return .failure(Refusal(
                    .invalidRequest,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."))
            }
            let indexes = topic.assignments.map(\.partitionIndex).sorted()
            guard indexes == Array(0..<Int32(clamping: indexes.count)) else {
                return .failure(Refusal(
                    .invalidReplicaAssignment, "Partitions should be a consecutive 0-based integer sequence, got \(indexes)."))
            }
            for assignment in topic.assignments {
                if let problem = Self.validateAssignment(assignment.brokerIds, state: state) {
                    return .failure(Refusal(.invalidReplicaAssignment, problem))
                }
            }
            partitionCount = Int32(clamping: topic.assignments.count)
        } else if topic.numPartitions == -1 {
            partitionCount = settings.defaultPartitions
        } else {
            guard topic.numPartitions > 0 else {
                return .failure(Refusal(.invalidPartitions, "Number of partitions was set to an invalid non-positive value."))
            }
            partitionCount = topic.numPartitions
        }
        guard topic.replicationFactor == -1 || topic.replicationFactor > 0 else {
            return .failure(Refusal(
                .invalidReplicationFactor, "Replication factor must be larger than 0, or -1 to use the default value."))
        }
        var configs: [String: String] = [:]
        for config in topic.configs {
            guard let value = config.value else {
                return .failure(Refusal(.invalidConfig, "Null value not supported for topic configs: \(config.name)"))
            }
            guard configs.updateValue(value, forKey: config.name) == nil else {
                return .failure(Refusal(.invalidRequest, "Duplicate config key \(config.name)."))
            }
            if let error = TopicConfig.validate(key: config.name, value: value) {
                return .failure(Refusal(.invalidConfig, error.message))
            }
        }
        return .success(TopicSpec(
            name: topic.name, topicId: Self.newTopicId(state: state), partitionCount: partitionCount,
            replicationFactor: topic.replicationFactor, configs: configs))
    }

    /// A random, non-zero topic id not used by any topic in `state`.
    static func newTopicId(state: MetadataState) -> KafkaUUID {
        var id = KafkaUUID.random()
        for _ in 0..<8 where id == .zero || state.topic(id: id) != nil { id = KafkaUUID.random() }
        return id
    }

    static func failedTopic(
        _ name: String, _ code: Int16, _ message: String?, version: Int16
    ) -> CreateTopicsResponse.CreatableTopicResult {
        var result = CreateTopicsResponse.CreatableTopicResult()
        result.name = name
        result.errorCode = code
        result.errorMessage = message
        return result
    }

    func createdTopic(
        _ spec: TopicSpec, configs: [String: String], assignedId: Bool, version: Int16
    ) -> CreateTopicsResponse.CreatableTopicResult {
        var result = CreateTopicsResponse.CreatableTopicResult()
        result.name = spec.name
        result.errorCode = 0
        result.errorMessage = nil
        if version >= 7, assignedId { result.topicId = spec.topicId }
        if version >= 5 {
            result.numPartitions = spec.partitionCount
            result.replicationFactor = 1
            result.configs = DescribedTopicConfig.all(configs: configs, settings: settings).map { described in
                var config = CreateTopicsResponse.CreatableTopicConfigs()
                config.name = described.name
                config.value = described.value
                config.readOnly = false
                config.configSource = described.source.rawValue
                config.isSensitive = false
                return config
            }
        }
        return result
    }

    /// Creates the missing ones of `topics` with the broker's default partition count, for Metadata
    /// and Produce when both the request and `auto.create.topics.enable` allow it. Kafka's internal
    /// topics (`__consumer_offsets`, `__transaction_state`) are created with Kafka's settings for them
    /// even when auto-creation is off, since the group and transaction coordinators cannot work
    /// without them. Returns a Kafka error code per topic: 0 when the topic
    /// exists now, INVALID_TOPIC_EXCEPTION for an illegal name, UNKNOWN_TOPIC_OR_PARTITION
    /// (retriable) when it could not be created.
    public func autoCreate(topics: [String]) async -> [String: Int16] {
        var codes: [String: Int16] = [:]
        let state = await metadata.state
        var specs: [TopicSpec] = []
        for name in topics where codes[name] == nil {
            if MetadataState.validateTopicName(name) != nil {
                codes[name] = KafkaErrorCode.invalidTopicException.rawValue
            } else if state.topics[name] != nil {
                codes[name] = 0
            } else if !settings.autoCreateTopics && Self.internalTopics[name] == nil {
                codes[name] = KafkaErrorCode.unknownTopicOrPartition.rawValue
            } else {
                let preset = Self.internalTopics[name]
                var spec = TopicSpec(
                    name: name, topicId: Self.newTopicId(state: state),
                    partitionCount: preset?.partitions ?? settings.defaultPartitions,
                    configs: preset?.configs ?? [:], isInternal: preset != nil)
                // Two ids drawn for one request must differ too.
                for _ in 0..<8 where specs.contains(where: { $0.topicId == spec.topicId }) {
                    spec.topicId = Self.newTopicId(state: state)
                }
                specs.append(spec)
                codes[name] = KafkaErrorCode.unknownTopicOrPartition.rawValue
            }
        }
        guard !specs.isEmpty else { return codes }
        let outcome = await execute(.createTopics(specs), validateOnly: false, waitMs: 10_000)
        for (spec, result) in zip(specs, Self.itemResults(outcome, count: specs.count)) {
            switch result.code {
            case 0, KafkaErrorCode.topicAlreadyExists.rawValue:
                // Another broker may have created it at the same moment: it exists either way.
                codes[spec.name] = 0
                if result.code == 0 {
                    logger.info("auto-created topic", metadata: ["topic": "\(spec.name)", "partitions": "\(spec.partitionCount)"])
                }
            case KafkaErrorCode.invalidTopicException.rawValue:
                codes[spec.name] = result.code
            default:
                logger.warning(
                    "auto-creation failed", metadata: ["topic": "\(spec.name)", "error": "\(result.code) \(result.message ?? "")"])
                codes[spec.name] = KafkaErrorCode.unknownTopicOrPartition.rawValue
            }
        }
        return codes
    }
}
