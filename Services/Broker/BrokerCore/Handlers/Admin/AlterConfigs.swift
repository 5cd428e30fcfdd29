import ClusterMetadata
import KafkaProtocol

extension AdminHandlers {
    /// AlterConfigs (v0-2, legacy): replaces a topic's whole config set. Broker configs are static.
    public func alterConfigs(_ request: AlterConfigsRequest, version: Int16) async -> AlterConfigsResponse {
        let duplicates = Self.duplicateResources(request.resources.map { ($0.resourceType, $0.resourceName) })
        var results: [AlterConfigsResponse.AlterConfigsResourceResponse] = []
        for resource in request.resources {
            let (code, message) = await alterResource(
                type: resource.resourceType, name: resource.resourceName, duplicate: duplicates.contains(Self.key(resource.resourceType, resource.resourceName)),
                legacy: true, brokerKeys: resource.configs.map(\.name), validateOnly: request.validateOnly
            ) { () -> Result<MetadataCommand, Refusal> in
                var configs: [String: String] = [:]
                for config in resource.configs {
                    guard let value = config.value else {
                        return .failure(Refusal(.invalidConfig, "Null value not supported for topic configs: \(config.name)"))
                    }
                    configs[config.name] = value
                }
                return .success(.alterTopicConfigs(topic: resource.resourceName, configs: configs))
            }
            var result = AlterConfigsResponse.AlterConfigsResourceResponse()
            result.errorCode = code
            result.errorMessage = message
            result.resourceType = resource.resourceType
            result.resourceName = resource.resourceName
            results.append(result)
        }
        var response = AlterConfigsResponse()
        response.responses = results
        return response
    }

    /// IncrementalAlterConfigs (v0-1): SET, DELETE, APPEND and SUBTRACT on a topic's configs,
    /// all-or-nothing per resource. Broker configs are static.
    public func incrementalAlterConfigs(
        _ request: IncrementalAlterConfigsRequest, version: Int16
    ) async -> IncrementalAlterConfigsResponse {
        let duplicates = Self.duplicateResources(request.resources.map { ($0.resourceType, $0.resourceName) })
        var results: [IncrementalAlterConfigsResponse.AlterConfigsResourceResponse] = []
        for resource in request.resources {
            let (code, message) = await alterResource(
                type: resource.resourceType, name: resource.resourceName, duplicate: duplicates.contains(Self.key(resource.resourceType, resource.resourceName)),
                legacy: false, brokerKeys: resource.configs.map(\.name), validateOnly: request.validateOnly
            ) { () -> Result<MetadataCommand, Refusal> in
                var operations: [ConfigOperation] = []
                for config in resource.configs {
                    guard config.configOperation >= 0, let type = ConfigOperationType(rawValue: UInt8(config.configOperation)) else {
                        return .failure(Refusal(.invalidRequest, "Unknown config operation \(config.configOperation) for \(config.name)"))
                    }
                    operations.append(ConfigOperation(key: config.name, operation: type, value: config.value))
                }
                return .success(.incrementalAlterTopicConfigs(topic: resource.resourceName, operations: operations))
            }
            var result = IncrementalAlterConfigsResponse.AlterConfigsResourceResponse()
            result.errorCode = code
            result.errorMessage = message
            result.resourceType = resource.resourceType
            result.resourceName = resource.resourceName
            results.append(result)
        }
        var response = IncrementalAlterConfigsResponse()
        response.responses = results
        return response
    }

    static func key(_ type: Int8, _ name: String) -> String { "\(type):\(name)" }

    static func duplicateResources(_ resources: [(Int8, String)]) -> Set<String> {
        var seen: Set<String> = []
        var duplicates: Set<String> = []
        for (type, name) in resources where !seen.insert(key(type, name)).inserted { duplicates.insert(key(type, name)) }
        return duplicates
    }

    /// The shared checks of both alter APIs; `command` builds the topic change once the resource is known to be a topic.
    func alterResource(
        type: Int8, name: String, duplicate: Bool, legacy: Bool, brokerKeys: [String], validateOnly: Bool,
        command: () -> Result<MetadataCommand, Refusal>
    ) async -> (Int16, String?) {
        if duplicate { return (KafkaErrorCode.invalidRequest.rawValue, "Duplicate resource.") }
        switch ConfigResourceType(rawValue: type) {
        case .topic:
            if let error = MetadataState.validateTopicName(name) {
                return (KafkaErrorCode.invalidTopicException.rawValue, Self.illegalTopicMessage(name, error))
            }
            switch command() {
            case .failure(let refusal):
                return (refusal.code, refusal.message)
            case .success(let command):
                let result = Self.singleResult(await execute(command, validateOnly: validateOnly, waitMs: 10_000))
                if result.code == 0, !validateOnly { logger.info("altered topic configs", metadata: ["topic": "\(name)"]) }
                return result
            }
        case .broker:
            if !name.isEmpty, Int32(name) == nil {
                return (KafkaErrorCode.invalidRequest.rawValue, "Broker id must be an integer, but it is: \(name)")
            }
            // Nothing to change is a successful change, as Kafka answers it.
            if brokerKeys.isEmpty { return (0, nil) }
            let keys = brokerKeys.sorted().joined(separator: ", ")
            return (
                KafkaErrorCode.invalidRequest.rawValue,
                "Invalid config value for resource BROKER \(name): Cannot update these configs dynamically: \(keys). "
                    + "Floe broker configs are static (set by flags or environment at start-up).")
        case .brokerLogger:
            if legacy {
                return (
                    KafkaErrorCode.invalidRequest.rawValue,
                    "AlterConfigs is deprecated and does not support the resource type BROKER_LOGGER")
            }
            return (KafkaErrorCode.invalidRequest.rawValue, "Log levels are set at start-up (--log-level) and cannot be changed at runtime.")
        case nil:
            return (KafkaErrorCode.invalidRequest.rawValue, "Unexpected resource type \(type).")
        }
    }
}
