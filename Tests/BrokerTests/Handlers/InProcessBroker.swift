// About 400 lines on purpose: the whole in-process broker fixture (controller, WAL writer, store,
// broker and a typed client) that the handler tests share, kept in one place so they all build it alike.
import ClusterMetadata
import EventLoopTimers
import Foundation
import KafkaProtocol
import KafkaRecords
import Logging
import NIOCore
import ObjectStorage
import Testing

@testable import BrokerCore
@testable import KafkaTransport

/// The controller and the broker's metadata image in one: each command applies to a `MetadataState`
/// at the next index, waiters for that index wake, and the new version is announced to `versions()`
/// (as `MetadataFollower` announces what it applied).
actor InMemoryMetadata: MetadataWriter, MetadataSource {
    private var current = MetadataState()
    private var index: UInt64 = 0
    private var waiters: [UInt64: (version: UInt64, continuation: CheckedContinuation<Bool, Never>, timer: Scheduled<Void>?)] = [:]
    private var nextWaiter: UInt64 = 0
    private let announced: AsyncStream<UInt64>
    private let announce: AsyncStream<UInt64>.Continuation

    init() {
        (announced, announce) = AsyncStream<UInt64>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    var state: MetadataState { current }

    /// Every applied version from now on; a slow reader sees only the newest (it reads `state` anyway).
    nonisolated func versions() -> AsyncStream<UInt64> { announced }

    func writeWithIndex(_ command: MetadataCommand) async throws -> (result: MetadataResult, index: UInt64) {
        index += 1
        let result = current.apply(command, index: index)
        announce.yield(index)
        for (id, waiter) in waiters where waiter.version <= index {
            waiters[id] = nil
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: true)
        }
        return (result, index)
    }

    func waitForVersion(_ version: UInt64, timeout: Duration) async -> Bool {
        if current.lastAppliedIndex >= version { return true }
        let id = nextWaiter
        nextWaiter &+= 1
        return await withCheckedContinuation { continuation in
            let timer = LoopTimers.after(timeout) { Task { await self.expire(id) } }
            waiters[id] = (version, continuation, timer)
        }
    }

    private func expire(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.continuation.resume(returning: false)
    }

    /// Ends `versions()` and answers every waiter (the broker is going away).
    func close() {
        announce.finish()
        for waiter in waiters.values {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: false)
        }
        waiters.removeAll()
    }
}

/// Broker 1 of zone "a", served in-process: the real `BrokerRequestHandler`, `ReplicaManager` and
/// read path over the in-memory metadata, appending in WAL-bypass mode into a `FileObjectStore` in a
/// temporary directory. Requests go in as encoded frames and answers come back decoded, exactly as a
/// client at that version would read them.
final class InProcessBroker: Sendable {
    static let nodeId: NodeID = 1
    static let host = "broker-1.floe.test"
    static let port: Int32 = 19092
    /// The broker's wall clock: fixed, so LogAppendTime stamps are known.
    static let now: Int64 = 1_700_000_000_000

    let metadata: InMemoryMetadata
    let replicas: ReplicaManager
    let context: BrokerContext
    let handler: BrokerRequestHandler
    private let directory: URL
    private let follower: Task<Void, Never>

    /// The broker's object store (routed objects, committed data).
    let store: FileObjectStore

    private init(autoCreateTopics: Bool, logCacheBytes: Int, fetchSessionSlots: Int, zoneRouting: Bool) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("floe-handlers-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let logger = Logger(label: "in-process-broker") { _ in SwiftLogNoOpLogHandler() }
        let store = try FileObjectStore(directory: directory.path, logger: logger)
        let metadata = InMemoryMetadata()
        var settings = BrokerSettings(
            nodeId: Self.nodeId, zone: "a", advertisedHost: Self.host, advertisedPort: Self.port, clusterId: "in-process-cluster",
            defaultPartitions: 2, autoCreateTopics: autoCreateTopics, maxIncrementalFetchSessionCacheSlots: fetchSessionSlots)
        settings.zoneRouting = zoneRouting
        let wal = WALClient(logger: logger)
        let committed = CommittedReader(store: store, logger: logger)
        let now: @Sendable () -> Int64 = { Self.now }
        let replicas = ReplicaManager(
            nodeId: Self.nodeId, zone: "a", wal: wal, committed: committed, metadata: metadata, writer: metadata,
            logCacheBytes: logCacheBytes, bypass: WALBypassAppender(store: store, writer: metadata, metadata: metadata, logger: logger),
            now: now, logger: logger)
        let admin = AdminHandlers(settings: settings, writer: metadata, metadata: metadata, now: now, logger: logger)
        context = BrokerContext(
            settings: settings, metadata: metadata, writer: metadata, replicas: replicas, wal: wal, committed: committed, logger: logger,
            autoCreate: { await admin.autoCreate(topics: $0) }, now: now,
            router: zoneRouting ? ProduceRouter(settings: settings, store: store, writer: metadata, metadata: metadata, logger: logger) : nil,
            claims: zoneRouting ? RoutedClaims(store: store, logger: logger) : nil)
        self.store = store
        handler = BrokerRequestHandler(
            context: context, admin: admin, producerIds: ProducerIdAllocator(nodeId: Self.nodeId, writer: metadata, incarnation: { 1 }))
        self.metadata = metadata
        self.replicas = replicas
        // As floe-broker does: every applied version brings the led partitions in line with the image.
        follower = Task {
            for await _ in metadata.versions() {
                await replicas.apply(await metadata.state)
            }
        }
    }

    /// Runs `body` against a fresh broker that is registered and listed, then takes it down.
    static func with<T>(
        autoCreateTopics: Bool = false, logCacheBytes: Int = 8 << 20, fetchSessionSlots: Int = 1_000, zoneRouting: Bool = false,
        _ body: (InProcessBroker) async throws -> T
    ) async throws -> T {
        let broker = try InProcessBroker(
            autoCreateTopics: autoCreateTopics, logCacheBytes: logCacheBytes, fetchSessionSlots: fetchSessionSlots, zoneRouting: zoneRouting)
        do {
            try await broker.register(node: nodeId, zone: "a", listener: "\(host):\(port)")
            let result = try await body(broker)
            await broker.shutdown()
            return result
        } catch {
            await broker.shutdown()
            throw error
        }
    }

    private func shutdown() async {
        await replicas.resignAll()
        await metadata.close()
        await follower.value
        await context.wal.close()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Registers a node (another broker, to lead partitions this one does not).
    func register(node: NodeID, zone: String, listener: String) async throws {
        let (result, _) = try await metadata.writeWithIndex(
            .registerNode(NodeRegistration(id: node, kind: .broker, zone: zone, listener: listener, admin: "127.0.0.1:1\(node)")))
        guard case .nodeRegistered = result else { throw InProcessBrokerError("registering node \(node) answered \(result)") }
    }

    /// Creates `name` through the metadata and returns its id once every partition this broker leads
    /// accepts writes (their `.ready` leadership events, not polling).
    @discardableResult
    func createTopic(_ name: String, partitions: Int32 = 1, configs: [String: String] = [:]) async throws -> KafkaUUID {
        let events = await replicas.leadershipEvents()
        // Distinct per topic of this broker, and the same on every run.
        let id = KafkaUUID(high: 0x4000_0000_0000 | UInt64(await metadata.state.topics.count + 1), low: 0x8000_0000_0000_0001)
        let (result, _) = try await metadata.writeWithIndex(
            .createTopics([TopicSpec(name: name, topicId: id, partitionCount: partitions, configs: configs)]))
        guard result == .items([ItemResult(name: name)]) else { throw InProcessBrokerError("creating \(name) answered \(result)") }
        try await waitUntilLed(name, events: events)
        return id
    }

    /// Returns once every partition of `name` that the image gives this broker is ready here.
    func waitUntilLed(_ name: String, events: AsyncStream<LeadershipEvent>? = nil) async throws {
        let stream = if let events { events } else { await replicas.leadershipEvents() }
        let topic = try #require(await metadata.state.topics[name], "topic \(name) is not in the image")
        var waiting = Set(topic.partitions.indices.filter { topic.partitions[$0].leader == Self.nodeId }.map { Int32($0) })
        if waiting.isEmpty { return }
        for await event in stream {
            if case .ready(let key, _, _) = event, key.topic == name { waiting.remove(key.partition) }
            if waiting.isEmpty { return }
        }
        throw InProcessBrokerError("leadership events ended before \(name) \(waiting.sorted()) became ready")
    }

    /// Sends `request` at `version` through the broker's request handler and decodes the answer.
    func send<Request: KafkaRequest>(_ request: Request, version: Int16, clientId: String = "handler-tests") async throws -> Request.Response {
        guard case .respond(var body, let headerVersion) = try await exchange(request, version: version, clientId: clientId) else {
            throw InProcessBrokerError("\(Request.apiKey) v\(version) got no answer")
        }
        #expect(headerVersion == Request.apiKey.responseHeaderVersion(version))
        let response = try Request.Response(from: &body, version: version)
        #expect(body.readableBytes == 0, "trailing bytes after \(Request.Response.self) v\(version)")
        return response
    }

    /// What the handler does with `request`: answer, stay silent or close the connection.
    func exchange<Request: KafkaRequest>(_ request: Request, version: Int16, clientId: String = "handler-tests") async throws -> KafkaResponseAction {
        var body = ByteBuffer()
        try request.encode(to: &body, version: version)
        let frame = KafkaRequestFrame(
            apiKey: Request.apiKey.rawValue, apiVersion: version, correlationId: 1, clientId: clientId,
            headerVersion: Request.apiKey.requestHeaderVersion(version), body: body)
        let pending = await handler.accept(frame, connection: ConnectionInfo(id: 1, remoteAddress: nil))
        switch pending.storage {
        case .ready(let action): return action
        case .later(let complete): return await complete()
        case .future(let future): return try await future.get()
        }
    }
}

struct InProcessBrokerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A record as a test writes and reads it.
struct TestRecord: Hashable, CustomStringConvertible {
    var key: String?
    var value: String
    var timestamp: Int64 = 1_000

    var description: String { "\(key ?? "nil")=\(value)@\(timestamp)" }
}

/// A record read back from a partition, with the offset and timestamp the log gave it.
struct ReadRecord: Hashable {
    var offset: Int64
    var record: TestRecord
}

enum Records {
    /// One v2 batch of `records`, as a producer builds it.
    static func batch(_ records: [TestRecord], producerId: Int64 = -1, baseSequence: Int32 = -1) throws -> ByteBuffer {
        var builder = RecordBatchBuilder(producerId: producerId, producerEpoch: producerId >= 0 ? 0 : -1, baseSequence: baseSequence)
        for record in records {
            try builder.append(timestamp: record.timestamp, key: record.key.map { ByteBuffer(string: $0) }, value: ByteBuffer(string: record.value))
        }
        return try builder.build().bytes
    }

    /// `count` records "k<first+i>" = "v<first+i>" at timestamps `timestamp`, `timestamp` + 1, …
    static func numbered(_ first: Int, count: Int, timestamp: Int64 = 1_000) -> [TestRecord] {
        (first..<first + count).map { TestRecord(key: "k\($0)", value: "v\($0)", timestamp: timestamp + Int64($0 - first)) }
    }

    /// Every record of a fetched record set, with its offset; fails on a partial or corrupt batch.
    static func read(_ recordSet: ByteBuffer?) throws -> [ReadRecord] {
        try batches(recordSet).flatMap { batch in
            try batch.records(maxUncompressedBytes: 1 << 20).map { record in
                ReadRecord(
                    offset: record.offset(in: batch.header),
                    record: TestRecord(
                        key: record.key.map { String(buffer: $0) }, value: record.value.map { String(buffer: $0) } ?? "",
                        timestamp: record.timestamp(in: batch.header)))
            }
        }
    }

    /// The whole batches of a fetched record set; fails on a partial or corrupt one.
    static func batches(_ recordSet: ByteBuffer?) throws -> [RecordBatch] {
        guard let recordSet else { return [] }
        let parsed = try RecordBatch.parseRecordSet(recordSet)
        #expect(parsed.partial == nil, "a fetched record set ends inside a batch")
        for batch in parsed.batches { #expect(batch.verifyCRC(), "batch at \(batch.baseOffset) has a bad CRC") }
        return parsed.batches
    }
}

/// Requests list partitions under their topic: consecutive `items` of one topic share its entry, in order.
func groupedByTopic<Topic: KafkaStruct, Partition>(
    _ items: [(topic: String, partition: Partition)], name: WritableKeyPath<Topic, String>, partitions: WritableKeyPath<Topic, [Partition]>
) -> [Topic] {
    var topics: [Topic] = []
    for item in items {
        if let last = topics.indices.last, topics[last][keyPath: name] == item.topic {
            topics[last][keyPath: partitions].append(item.partition)
        } else {
            var topic = Topic()
            topic[keyPath: name] = item.topic
            topic[keyPath: partitions] = [item.partition]
            topics.append(topic)
        }
    }
    return topics
}

/// The answer for `topic`-`index` in a response's per-topic answers; fails the test when there is none.
func answer<Topic, Partition>(
    _ topics: [Topic], _ topic: String, _ index: Int32, name: (Topic) -> String?, partitions: (Topic) -> [Partition],
    index partitionIndex: (Partition) -> Int32, sourceLocation: SourceLocation = #_sourceLocation
) throws -> Partition {
    let found = topics.filter { name($0) == topic }.flatMap(partitions).first { partitionIndex($0) == index }
    return try #require(found, "no answer for \(topic)-\(index)", sourceLocation: sourceLocation)
}

extension ProduceRequest {
    /// acks=-1 by default; `partitions` lists (topic, partition, record set) in request order.
    static func make(acks: Int16 = -1, _ partitions: [(topic: String, partition: Int32, records: ByteBuffer)]) -> ProduceRequest {
        var request = ProduceRequest()
        request.acks = acks
        request.timeoutMs = 30_000
        let items = partitions.map { item in
            var data = ProduceRequest.PartitionProduceData()
            data.index = item.partition
            data.records = item.records
            return (item.topic, data)
        }
        request.topicData = groupedByTopic(items, name: \.name, partitions: \.partitionData)
        return request
    }
}

extension ProduceResponse {
    func partition(_ topic: String, _ index: Int32) throws -> ProduceResponse.PartitionProduceResponse {
        try answer(responses, topic, index, name: \.name, partitions: \.partitionResponses, index: \.index)
    }
}

extension FetchRequest {
    /// A consumer's fetch from `offset` of each partition, answered at once unless `maxWaitMs` is set.
    static func make(
        _ partitions: [(topic: String, partition: Int32, offset: Int64)], maxWaitMs: Int32 = 0, minBytes: Int32 = 1,
        partitionMaxBytes: Int32 = 1 << 20, currentLeaderEpoch: Int32 = -1
    ) -> FetchRequest {
        var request = FetchRequest()
        request.maxWaitMs = maxWaitMs
        request.minBytes = minBytes
        request.maxBytes = 50 << 20
        let items = partitions.map { item in
            var partition = FetchRequest.FetchPartition()
            partition.partition = item.partition
            partition.fetchOffset = item.offset
            partition.currentLeaderEpoch = currentLeaderEpoch
            partition.partitionMaxBytes = partitionMaxBytes
            return (item.topic, partition)
        }
        request.topics = groupedByTopic(items, name: \.topic, partitions: \.partitions)
        return request
    }
}

extension FetchResponse {
    func partition(_ topic: String, _ index: Int32) throws -> FetchResponse.PartitionData {
        try answer(responses, topic, index, name: \.topic, partitions: \.partitions, index: \.partitionIndex)
    }
}

extension ListOffsetsRequest {
    /// A consumer's lookup of `timestamp` (-1 latest, -2 earliest, -3 max timestamp) in each partition.
    static func make(_ partitions: [(topic: String, partition: Int32, timestamp: Int64)], currentLeaderEpoch: Int32 = -1) -> ListOffsetsRequest {
        var request = ListOffsetsRequest()
        request.replicaId = -1
        let items = partitions.map { item in
            var partition = ListOffsetsRequest.ListOffsetsPartition()
            partition.partitionIndex = item.partition
            partition.timestamp = item.timestamp
            partition.currentLeaderEpoch = currentLeaderEpoch
            return (item.topic, partition)
        }
        request.topics = groupedByTopic(items, name: \.name, partitions: \.partitions)
        return request
    }
}

extension ListOffsetsResponse {
    func partition(_ topic: String, _ index: Int32) throws -> ListOffsetsResponse.ListOffsetsPartitionResponse {
        try answer(topics, topic, index, name: \.name, partitions: \.partitions, index: \.partitionIndex)
    }
}

extension MetadataRequest {
    /// Metadata for `topics` (nil: every topic).
    static func make(_ topics: [String]?, allowAutoTopicCreation: Bool = true) -> MetadataRequest {
        var request = MetadataRequest()
        request.topics = topics?.map { name in
            var topic = MetadataRequest.MetadataRequestTopic()
            topic.name = name
            return topic
        }
        request.allowAutoTopicCreation = allowAutoTopicCreation
        return request
    }
}

extension MetadataResponse {
    func topic(_ name: String) throws -> MetadataResponse.MetadataResponseTopic {
        try #require(topics.first { $0.name == name }, "no answer for topic \(name)")
    }
}

/// Kafka error codes the handler tests expect, by name.
enum KafkaCode {
    static let none = KafkaErrorCode.none.rawValue
    static let offsetOutOfRange = KafkaErrorCode.offsetOutOfRange.rawValue
    static let corruptMessage = KafkaErrorCode.corruptMessage.rawValue
    static let unknownTopicOrPartition = KafkaErrorCode.unknownTopicOrPartition.rawValue
    static let notLeaderOrFollower = KafkaErrorCode.notLeaderOrFollower.rawValue
    static let messageTooLarge = KafkaErrorCode.messageTooLarge.rawValue
    static let invalidTopic = KafkaErrorCode.invalidTopicException.rawValue
    static let invalidRequiredAcks = KafkaErrorCode.invalidRequiredAcks.rawValue
    static let invalidRequest = KafkaErrorCode.invalidRequest.rawValue
    static let fetchSessionIdNotFound = KafkaErrorCode.fetchSessionIdNotFound.rawValue
    static let invalidFetchSessionEpoch = KafkaErrorCode.invalidFetchSessionEpoch.rawValue
    static let fetchSessionTopicIdError = KafkaErrorCode.fetchSessionTopicIdError.rawValue
    static let unknownTopicId = KafkaErrorCode.unknownTopicId.rawValue
    static let unknownLeaderEpoch = KafkaErrorCode.unknownLeaderEpoch.rawValue
}
