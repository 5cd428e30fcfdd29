import BrokerCore
import ClusterMetadata
import ControllerClient
import KafkaProtocol
import Logging
import NIOCore
import Testing

/// A controller and a broker's metadata image. Commands apply to the controller's `MetadataState` at
/// an incrementing index; the image follows at once, or, in `lagging` mode, only when someone waits
/// for a version (as a follower catches up), so tests can see whether a handler waited.
/// `failWith` makes every write fail as an unreachable or refusing controller would.
actor FakeController: MetadataWriter, MetadataSource {
    private var committed = MetadataState()
    private var image = MetadataState()
    private var index: UInt64 = 0
    private(set) var written: [MetadataCommand] = []
    private(set) var waitedFor: [UInt64] = []
    private var failure: ControllerClientError?
    private var lagging = false

    var state: MetadataState { image }

    func writeWithIndex(_ command: MetadataCommand) async throws -> (result: MetadataResult, index: UInt64) {
        if let failure { throw failure }
        written.append(command)
        index += 1
        let result = committed.apply(command, index: index)
        if !lagging { image = committed }
        return (result, index)
    }

    func waitForVersion(_ version: UInt64, timeout: Duration) async -> Bool {
        waitedFor.append(version)
        if version <= committed.lastAppliedIndex { image = committed }
        return image.lastAppliedIndex >= version
    }

    func failWith(_ error: ControllerClientError?) { failure = error }

    func setLagging(_ value: Bool) { lagging = value }

    /// Applies a setup command directly (controller and image) and returns its result.
    @discardableResult
    func apply(_ command: MetadataCommand) -> MetadataResult {
        index += 1
        let result = committed.apply(command, index: index)
        image = committed
        return result
    }
}

/// A cluster of brokers 1 (zone a) and 2 (zone b) with handlers running as broker 1.
struct AdminFixture {
    let controller = FakeController()
    let handlers: AdminHandlers
    let settings: BrokerSettings

    init(defaultPartitions: Int32 = 2, autoCreate: Bool = true, messageMaxBytes: Int32 = 1_048_588) async {
        settings = BrokerSettings(
            nodeId: 1, zone: "a", advertisedHost: "127.0.0.1", advertisedPort: 9092, clusterId: "test-cluster",
            defaultPartitions: defaultPartitions, autoCreateTopics: autoCreate, messageMaxBytes: messageMaxBytes)
        handlers = AdminHandlers(
            settings: settings, writer: controller, metadata: controller, now: { 1_700_000_000_000 },
            logger: Logger(label: "admin-test") { _ in SwiftLogNoOpLogHandler() })
        await controller.apply(.registerNode(NodeRegistration(id: 1, kind: .broker, zone: "a", listener: "127.0.0.1:9092", admin: "127.0.0.1:9100")))
        await controller.apply(.registerNode(NodeRegistration(id: 2, kind: .broker, zone: "b", listener: "[::1]:9093", admin: "127.0.0.1:9101")))
        await controller.apply(.registerNode(NodeRegistration(id: 7, kind: .walWriter, zone: "a", listener: "127.0.0.1:9200", admin: "127.0.0.1:9201")))
    }

    var state: MetadataState { get async { await controller.state } }

    /// Creates topics directly in the image (not through the handler under test).
    func seed(_ name: String, partitions: Int32 = 1, configs: [String: String] = [:], internal isInternal: Bool = false) async -> KafkaUUID {
        // FNV-1a of the name: deterministic, non-zero and distinct for the few names a test seeds.
        let hash = name.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        let id = KafkaUUID(high: UInt64(name.utf8.count) << 32 | 0x4000, low: hash | 1)
        let result = await controller.apply(.createTopics([TopicSpec(name: name, topicId: id, partitionCount: partitions, configs: configs, isInternal: isInternal)]))
        #expect(result == .items([ItemResult(name: name)]))
        return id
    }
}

/// Encodes `message` at `version` with the generated encoder (failing the test if it refuses), decodes
/// it back, and checks that re-encoding gives the same bytes: what a client at that version would read.
func wire<M: KafkaMessage>(_ message: M, version: Int16, sourceLocation: SourceLocation = #_sourceLocation) throws -> M {
    var buffer = ByteBuffer()
    try message.encode(to: &buffer, version: version)
    let bytes = buffer
    let decoded = try M(from: &buffer, version: version)
    #expect(buffer.readableBytes == 0, "trailing bytes after decoding \(M.self) v\(version)", sourceLocation: sourceLocation)
    var again = ByteBuffer()
    try decoded.encode(to: &again, version: version)
    #expect(again == bytes, "\(M.self) v\(version) does not re-encode to the same bytes", sourceLocation: sourceLocation)
    return decoded
}

extension CreateTopicsRequest {
    static func make(
        _ topics: [(String, Int32)], replicationFactor: Int16 = -1, configs: [String: String?] = [:],
        validateOnly: Bool = false
    ) -> CreateTopicsRequest {
        var request = CreateTopicsRequest()
        request.validateOnly = validateOnly
        request.timeoutMs = 5000
        request.topics = topics.map { name, partitions in
            var creatable = CreateTopicsRequest.CreatableTopic()
            creatable.name = name
            creatable.numPartitions = partitions
            creatable.replicationFactor = replicationFactor
            creatable.configs = configs.keys.sorted().map { key in
                var config = CreateTopicsRequest.CreatableTopicConfig()
                config.name = key
                config.value = configs[key] ?? nil
                return config
            }
            return creatable
        }
        return request
    }
}

extension DescribeConfigsRequest {
    static func make(
        _ type: Int8, _ name: String, keys: [String]? = nil, synonyms: Bool = false, documentation: Bool = false
    ) -> DescribeConfigsRequest {
        var resource = DescribeConfigsRequest.DescribeConfigsResource()
        resource.resourceType = type
        resource.resourceName = name
        resource.configurationKeys = keys
        var request = DescribeConfigsRequest()
        request.resources = [resource]
        request.includeSynonyms = synonyms
        request.includeDocumentation = documentation
        return request
    }
}

extension DescribeConfigsResponse.DescribeConfigsResult {
    /// Config values by name.
    var values: [String: String?] {
        Dictionary(uniqueKeysWithValues: configs.map { ($0.name, $0.value) })
    }

    func entry(_ name: String) -> DescribeConfigsResponse.DescribeConfigsResourceResult? {
        configs.first { $0.name == name }
    }
}

enum Code {
    static let none: Int16 = 0
    static let unknownTopicOrPartition: Int16 = 3
    static let requestTimedOut: Int16 = 7
    static let invalidTopic: Int16 = 17
    static let topicAlreadyExists: Int16 = 36
    static let invalidPartitions: Int16 = 37
    static let invalidReplicationFactor: Int16 = 38
    static let invalidReplicaAssignment: Int16 = 39
    static let invalidConfig: Int16 = 40
    static let notController: Int16 = 41
    static let invalidRequest: Int16 = 42
    static let noReassignmentInProgress: Int16 = 85
    static let unknownTopicId: Int16 = 100
    static let mismatchedEndpointType: Int16 = 114
}
