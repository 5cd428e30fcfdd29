import ClusterMetadata
import KafkaProtocol

/// Kafka's `ConfigResource.Type` ids.
enum ConfigResourceType: Int8 {
    case topic = 2, broker = 4, brokerLogger = 8
}

extension AdminHandlers {
    /// Types of the broker configs `BrokerSettings.describedConfigs` lists (STRING when absent).
    static let brokerConfigTypes: [String: TopicDefaults.ConfigType] = [
        "broker.id": .int, "num.partitions": .int, "default.replication.factor": .int,
        "auto.create.topics.enable": .boolean, "message.max.bytes": .int, "offsets.topic.num.partitions": .int,
        "offsets.topic.replication.factor": .short, "min.insync.replicas": .int,
        "max.incremental.fetch.session.cache.slots": .int,
    ]

    /// DescribeConfigs (v0-4) for topics, this broker, and this broker's loggers.
    public func describeConfigs(_ request: DescribeConfigsRequest, version: Int16) async -> DescribeConfigsResponse {
        let state = await metadata.state
        let includeSynonyms = version >= 1 && request.includeSynonyms
        let includeDocumentation = version >= 3 && request.includeDocumentation
        var response = DescribeConfigsResponse()
        response.results = request.resources.map { resource in
            var result: DescribeConfigsResponse.DescribeConfigsResult
            switch describe(resource, state: state, includeSynonyms: includeSynonyms, includeDocumentation: includeDocumentation, version: version) {
            case .success(let configs):
                result = DescribeConfigsResponse.DescribeConfigsResult()
                result.errorMessage = nil
                let wanted = resource.configurationKeys.flatMap { $0.isEmpty ? nil : Set($0) }
                result.configs = wanted.map { keys in configs.filter { keys.contains($0.name) } } ?? configs
            case .failure(let refusal):
                result = DescribeConfigsResponse.DescribeConfigsResult()
                result.errorCode = refusal.code
                result.errorMessage = refusal.message
            }
            result.resourceType = resource.resourceType
            result.resourceName = resource.resourceName
            return result
        }
        return response
    }

    func describe(
        _ resource: DescribeConfigsRequest.DescribeConfigsResource, state: MetadataState, includeSynonyms: Bool,
        includeDocumentation: Bool, version: Int16
    ) -> Result<[DescribeConfigsResponse.DescribeConfigsResourceResult], Refusal> {
        switch ConfigResourceType(rawValue: resource.resourceType) {
        case .topic:
            let name = resource.resourceName
            if let error = MetadataState.validateTopicName(name) {
                return .failure(Refusal(.invalidTopicException, Self.illegalTopicMessage(name, error)))
            }
            guard let topic = state.topics[name] else {
                return .failure(Refusal(.unknownTopicOrPartition, "Topic \(name) does not exist."))
            }
            return .success(DescribedTopicConfig.all(configs: topic.configs, settings: settings).map { described in
                var entry = DescribeConfigsResponse.DescribeConfigsResourceResult()
                entry.name = described.name
                entry.value = described.value
                entry.readOnly = false
                entry.isSensitive = false
                if version == 0 {
                    entry.isDefault = described.source == .defaultConfig
                } else {
                    entry.configSource = described.source.rawValue
                }
                if includeSynonyms {
                    entry.synonyms = described.synonyms.map { synonym in
                        var item = DescribeConfigsResponse.DescribeConfigsSynonym()
                        item.name = synonym.name
                        item.value = synonym.value
                        item.source = synonym.source.rawValue
                        return item
                    }
                }
                if version >= 3 { entry.configType = described.type.rawValue }
                entry.documentation = includeDocumentation ? described.documentation : nil
                return entry
            })
        case .broker:
            // "" asks for the cluster-wide dynamic defaults, of which Floe has none.
            if resource.resourceName.isEmpty { return .success([]) }
            if let refusal = checkOwnBrokerId(resource.resourceName) { return .failure(refusal) }
            return .success(settings.describedConfigs.map { config in
                var entry = DescribeConfigsResponse.DescribeConfigsResourceResult()
                entry.name = config.name
                entry.value = config.value
                // Every broker config comes from the command line or environment and needs a restart to change.
                entry.readOnly = true
                entry.isSensitive = false
                if version >= 1 { entry.configSource = ConfigSource.staticBrokerConfig.rawValue }
                if includeSynonyms {
                    var synonym = DescribeConfigsResponse.DescribeConfigsSynonym()
                    synonym.name = config.name
                    synonym.value = config.value
                    synonym.source = ConfigSource.staticBrokerConfig.rawValue
                    entry.synonyms = [synonym]
                }
                if version >= 3 { entry.configType = (Self.brokerConfigTypes[config.name] ?? .string).rawValue }
                entry.documentation = nil
                return entry
            })
        case .brokerLogger:
            if resource.resourceName.isEmpty { return .failure(Refusal(.invalidRequest, "Broker id must not be empty")) }
            if let refusal = checkOwnBrokerId(resource.resourceName) { return .failure(refusal) }
            // Log levels are fixed at start-up (--log-level); there are no per-logger levels to list.
            return .success([])
        case nil:
            return .failure(Refusal(.invalidRequest, "Unsupported resource type: \(resource.resourceType)"))
        }
    }

    /// Kafka answers for its own broker id only; clients route per-broker requests by id.
    func checkOwnBrokerId(_ name: String) -> Refusal? {
        guard let id = Int32(name) else {
            return Refusal(.invalidRequest, "Broker id must be an integer, but it is: \(name)")
        }
        guard id == settings.nodeId else {
            return Refusal(.invalidRequest, "Unexpected broker id, expected \(settings.nodeId), but received \(name)")
        }
        return nil
    }
}
