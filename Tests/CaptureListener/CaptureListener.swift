import Foundation
import KafkaProtocol
import KafkaTransport
import Logging
import NIOCore
import Synchronization

/// `floe-capture --listen HOST:PORT --out DIR`: a listener that answers just enough of the Kafka
/// protocol to keep a real client talking (one broker, one partition per topic, no stored data) and
/// writes the first request frame of every (api, version) each client id sends to
/// `DIR/<client id>/<sequence>-<Api>-v<version>.bin`, size prefix included. The protocol tests use
/// the committed captures as golden fixtures (see Tests/Compatibility/capture_fixtures.py).
@main
struct CaptureListener {
    static func main() async throws {
        var listen = "127.0.0.1:9092"
        var out = "captures"
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--listen": listen = arguments.next() ?? listen
            case "--out": out = arguments.next() ?? out
            default:
                FileHandle.standardError.write(Data("usage: floe-capture --listen HOST:PORT --out DIR\n".utf8))
                exit(2)
            }
        }
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            FileHandle.standardError.write(Data("floe-capture: --listen must be HOST:PORT\n".utf8))
            exit(2)
        }
        let host = String(listen[..<colon])
        var logger = Logger(label: "floe-capture")
        logger.logLevel = .info

        let handler = CaptureHandler(directory: URL(fileURLWithPath: out), host: host, port: Int32(port))
        let server = KafkaServer(
            configuration: KafkaServerConfiguration(host: host, port: port, headerVersionResolver: { key, version in
                guard let api = ApiKey(rawValue: key), api.validVersions.contains(version) else { return nil }
                return api.requestHeaderVersion(version)
            }),
            handler: handler,
            logger: logger
        )
        try await server.run()
    }
}

final class CaptureHandler: KafkaRequestHandler {
    private struct State {
        var seen: Set<String> = []
        var sequence = 0
        var pendingMemberIds: Set<String> = []
    }

    let directory: URL
    let host: String
    let port: Int32
    private let state = Mutex(State())
    private static let topicId = KafkaUUID(high: 0x466C_6F65_4361_7074, low: 0x8000_0000_0000_0001)

    init(directory: URL, host: String, port: Int32) {
        self.directory = directory
        self.host = host
        self.port = port
    }

    func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        guard let api = ApiKey(rawValue: request.apiKey) else {
            return .immediate(.close(reason: "unknown api key \(request.apiKey)"))
        }
        save(request, api: api)
        do {
            guard let body = try respond(api, request) else { return .immediate(.noResponse) }
            return .immediate(.respond(body: body, headerVersion: api.responseHeaderVersion(request.apiVersion)))
        } catch {
            return .immediate(.close(reason: "cannot answer \(api.name) v\(request.apiVersion): \(error)"))
        }
    }

    /// Writes the first frame of each (client id, api, version), and every Produce frame (a client may
    /// spread its records over several requests).
    private func save(_ request: KafkaRequestFrame, api: ApiKey) {
        let client = (request.clientId ?? "anonymous").replacingOccurrences(of: "/", with: "_")
        let sequence: Int? = state.withLock { state in
            guard state.seen.insert("\(client)/\(api.rawValue)/\(request.apiVersion)").inserted || api == .produce
            else { return nil }
            state.sequence += 1
            return state.sequence
        }
        guard let sequence else { return }
        var frame = ByteBuffer()
        frame.writeInteger(Int32(request.frame.readableBytes))
        frame.writeImmutableBuffer(request.frame)
        let folder = directory.appendingPathComponent(client)
        let name = String(format: "%04d-%@-v%d.bin", sequence, api.name, Int(request.apiVersion))
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data(frame.readableBytesView).write(to: folder.appendingPathComponent(name))
        } catch {
            FileHandle.standardError.write(Data("floe-capture: cannot write \(name): \(error)\n".utf8))
        }
    }

    private func respond(_ api: ApiKey, _ request: KafkaRequestFrame) throws -> ByteBuffer? {
        let version = request.apiVersion
        var body = request.body
        var out = ByteBuffer()
        switch api {
        case .apiVersions:
            return ApiVersionsResponder.respond(version: version, body: request.body, advertised: .floe).body
        case .metadata:
            let metadata = try MetadataRequest(from: &body, version: version)
            try metadataResponse(metadata, version: version).encode(to: &out, version: version)
        case .produce:
            let produce = try ProduceRequest(from: &body, version: version)
            if produce.acks == 0 { return nil }
            var response = ProduceResponse()
            response.responses = produce.topicData.map { topic in
                var result = ProduceResponse.TopicProduceResponse()
                result.name = topic.name
                result.partitionResponses = topic.partitionData.map { partition in
                    var answer = ProduceResponse.PartitionProduceResponse()
                    answer.index = partition.index
                    answer.baseOffset = 0
                    answer.logAppendTimeMs = -1
                    answer.logStartOffset = 0
                    return answer
                }
                return result
            }
            try response.encode(to: &out, version: version)
        case .fetch:
            let fetch = try FetchRequest(from: &body, version: version)
            var response = FetchResponse()
            response.responses = fetch.topics.map { topic in
                var result = FetchResponse.FetchableTopicResponse()
                result.topic = topic.topic
                result.topicId = topic.topicId
                result.partitions = topic.partitions.map { partition in
                    var data = FetchResponse.PartitionData()
                    data.partitionIndex = partition.partition
                    data.highWatermark = 0
                    if version >= 4 { data.lastStableOffset = 0 }
                    if version >= 5 { data.logStartOffset = 0 }
                    data.preferredReadReplica = -1
                    data.abortedTransactions = []
                    data.records = ByteBuffer()
                    return data
                }
                return result
            }
            try response.encode(to: &out, version: version)
        case .listOffsets:
            let list = try ListOffsetsRequest(from: &body, version: version)
            var response = ListOffsetsResponse()
            response.topics = list.topics.map { topic in
                var result = ListOffsetsResponse.ListOffsetsTopicResponse()
                result.name = topic.name
                result.partitions = topic.partitions.map { partition in
                    var answer = ListOffsetsResponse.ListOffsetsPartitionResponse()
                    answer.partitionIndex = partition.partitionIndex
                    answer.timestamp = -1
                    answer.offset = 0
                    if version == 0 { answer.oldStyleOffsets = [0] }
                    if version >= 4 { answer.leaderEpoch = 0 }
                    return answer
                }
                return result
            }
            try response.encode(to: &out, version: version)
        case .offsetForLeaderEpoch:
            let request = try OffsetForLeaderEpochRequest(from: &body, version: version)
            var response = OffsetForLeaderEpochResponse()
            response.topics = request.topics.map { topic in
                var result = OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult()
                result.topic = topic.topic
                result.partitions = topic.partitions.map { partition in
                    var answer = OffsetForLeaderEpochResponse.EpochEndOffset()
                    answer.partition = partition.partition
                    answer.leaderEpoch = 0
                    answer.endOffset = 0
                    return answer
                }
                return result
            }
            try response.encode(to: &out, version: version)
        case .findCoordinator:
            let find = try FindCoordinatorRequest(from: &body, version: version)
            var response = FindCoordinatorResponse()
            if version < 4 {
                response.nodeId = 1
                response.host = host
                response.port = port
                response.errorMessage = nil
            }
            response.coordinators = find.coordinatorKeys.map { key in
                var coordinator = FindCoordinatorResponse.Coordinator()
                coordinator.key = key
                coordinator.nodeId = 1
                coordinator.host = host
                coordinator.port = port
                coordinator.errorMessage = nil
                return coordinator
            }
            try response.encode(to: &out, version: version)
        case .joinGroup:
            let join = try JoinGroupRequest(from: &body, version: version)
            var response = JoinGroupResponse()
            if join.memberId.isEmpty && version >= 4 {
                // KIP-394: the first join gets a member id and must come back with it.
                response.errorCode = KafkaErrorCode.memberIdRequired.rawValue
                response.memberId = "\(request.clientId ?? "member")-\(UUID().uuidString.lowercased())"
            } else {
                // The capture ends here: clients retry a coordinator that is still loading.
                response.errorCode = KafkaErrorCode.coordinatorLoadInProgress.rawValue
                response.memberId = join.memberId
            }
            response.generationId = -1
            // Nullable only from v7.
            response.protocolName = version >= 7 ? nil : ""
            try response.encode(to: &out, version: version)
        case .initProducerId:
            // Idempotent producers (kafka-python's default) need a real producer id before producing.
            var response = InitProducerIdResponse()
            response.producerId = 1000
            response.producerEpoch = 0
            try response.encode(to: &out, version: version)
        default:
            // Everything else gets the schema's default response: no error, nothing in it.
            try api.responseType.init().encode(to: &out, version: version)
        }
        return out
    }

    private func metadataResponse(_ request: MetadataRequest, version: Int16) -> MetadataResponse {
        var response = MetadataResponse()
        var broker = MetadataResponse.MetadataResponseBroker()
        broker.nodeId = 1
        broker.host = host
        broker.port = port
        broker.rack = nil
        response.brokers = [broker]
        response.clusterId = "floe-capture"
        response.controllerId = 1
        response.clusterAuthorizedOperations = Int32.min
        // v0: an empty list means every topic; v1+: null means every topic.
        let names: [String]
        if let topics = request.topics, !(topics.isEmpty && version == 0) {
            names = topics.compactMap(\.name)
        } else {
            names = ["captures"]
        }
        response.topics = names.map { name in
            var topic = MetadataResponse.MetadataResponseTopic()
            topic.name = name
            topic.topicId = Self.topicId
            topic.topicAuthorizedOperations = Int32.min
            var partition = MetadataResponse.MetadataResponsePartition()
            partition.partitionIndex = 0
            partition.leaderId = 1
            partition.leaderEpoch = 0
            partition.replicaNodes = [1]
            partition.isrNodes = [1]
            topic.partitions = [partition]
            return topic
        }
        return response
    }
}
