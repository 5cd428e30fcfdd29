import ControllerClient
import Foundation
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import NIOCore

/// Typed Kafka calls over the shared transport, for the bench and admin commands.
struct KafkaWire: Sendable {
    let transport: KafkaClient
    let clientId: String
    var timeout: Duration = .seconds(30)

    init(clientId: String, logger: Logger) {
        transport = KafkaClient(logger: logger)
        self.clientId = clientId
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends `request` at `version` to `endpoint` and decodes the response.
    func call<Request: KafkaRequest>(
        _ request: Request, version: Int16, to endpoint: KafkaEndpoint, as: Request.Response.Type = Request.Response.self
    ) async throws -> Request.Response {
        try await transport.send(request, version: version, to: endpoint, clientId: clientId, timeout: timeout)
    }

    /// The broker to bootstrap from: the first of a comma-separated `HOST:PORT,…` list.
    static func bootstrapEndpoint(_ list: String) throws -> KafkaEndpoint {
        guard let first = try parseEndpoints(list).first else { throw Failure(description: "no bootstrap address in '\(list)'") }
        return first
    }

    /// Metadata for `topics` (all when nil), without auto-creation.
    func metadata(_ bootstrap: KafkaEndpoint, topics: [String]?) async throws -> MetadataResponse {
        var request = MetadataRequest()
        request.topics = topics?.map {
            var topic = MetadataRequest.MetadataRequestTopic()
            topic.name = $0
            return topic
        }
        request.allowAutoTopicCreation = false
        return try await call(request, version: 12, to: bootstrap)
    }

    /// The leader endpoint of each partition of `topic`, waiting (bounded) until all have one.
    func leaders(_ bootstrap: KafkaEndpoint, topic: String, deadline: Duration = .seconds(30)) async throws -> [Int32: (id: Int32, endpoint: KafkaEndpoint)] {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        var last = ""
        while clock.now < end {
            let response = try await metadata(bootstrap, topics: [topic])
            let brokers = Dictionary(response.brokers.map { ($0.nodeId, KafkaEndpoint(host: $0.host, port: Int($0.port))) }, uniquingKeysWith: { a, _ in a })
            if let found = response.topics.first, found.errorCode == 0, !found.partitions.isEmpty {
                var leaders: [Int32: (Int32, KafkaEndpoint)] = [:]
                for partition in found.partitions where partition.errorCode == 0 {
                    if let endpoint = brokers[partition.leaderId] { leaders[partition.partitionIndex] = (partition.leaderId, endpoint) }
                }
                if leaders.count == found.partitions.count { return leaders }
                last = "\(found.partitions.count - leaders.count) partitions without a leader"
            } else {
                last = "topic error \(response.topics.first?.errorCode ?? -1)"
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw Failure(description: "\(topic): no leaders within \(deadline): \(last)")
    }

    /// Creates `topic` unless it exists.
    func createTopic(_ bootstrap: KafkaEndpoint, name: String, partitions: Int32, configs: [String: String] = [:]) async throws {
        if let existing = try await metadata(bootstrap, topics: [name]).topics.first, existing.errorCode == 0 { return }
        var topic = CreateTopicsRequest.CreatableTopic()
        topic.name = name
        topic.numPartitions = partitions
        topic.replicationFactor = -1
        topic.configs = configs.sorted { $0.key < $1.key }.map {
            var config = CreateTopicsRequest.CreatableTopicConfig()
            config.name = $0.key
            config.value = $0.value
            return config
        }
        var request = CreateTopicsRequest()
        request.topics = [topic]
        request.timeoutMs = 30_000
        let response = try await call(request, version: 7, to: bootstrap, as: CreateTopicsResponse.self)
        guard let result = response.topics.first else { throw Failure(description: "empty CreateTopics response") }
        if result.errorCode != 0 && result.errorCode != KafkaErrorCode.topicAlreadyExists.rawValue {
            throw Failure(description: "CreateTopics \(name): error \(result.errorCode) \(result.errorMessage ?? "")")
        }
    }

    func close() async {
        await transport.closeAll()
    }
}

extension KafkaWire {
    /// A Produce request carrying `batch` (one record batch) for `topic`-`partition`.
    static func produceRequest(topic: String, partition: Int32, batch: ByteBuffer, acks: Int16) -> ProduceRequest {
        var data = ProduceRequest.PartitionProduceData()
        data.index = partition
        data.records = batch
        var entry = ProduceRequest.TopicProduceData()
        entry.name = topic
        entry.partitionData = [data]
        var request = ProduceRequest()
        request.acks = acks
        request.timeoutMs = 30_000
        request.topicData = [entry]
        return request
    }

    /// A Produce request with one tiny record, for liveness probes.
    static func probeRecord(topic: String, partition: Int32) throws -> ProduceRequest {
        var builder = RecordBatchBuilder(codec: .none, expectedPayloadBytes: 64)
        try builder.append(timestamp: Int64(Date().timeIntervalSince1970 * 1000), key: nil, value: ByteBuffer(string: "probe"))
        return produceRequest(topic: topic, partition: partition, batch: try builder.build().bytes, acks: -1)
    }
}
