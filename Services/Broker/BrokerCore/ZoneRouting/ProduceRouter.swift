import ClusterMetadata
import ControllerClient
import EventLoopTimers
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import Metrics
import NIOCore
import ObjectStorage

/// The routing half of zone routing (DESIGN §6): produces this broker received for partitions led
/// from other zones are collected for `routedLingerMs`, written together as one routed object, and
/// each leader is sent a claim naming its byte ranges. Only the claims cross zones; the leaders read
/// the bytes from object storage, append them through their produce path and answer with the real
/// offsets, which go back to the producers.
///
/// One object is in flight at a time: the next is written only after every claim of the previous one
/// was answered, so a partition's produces reach its leader in the order this broker received them
/// (idempotent producers pipeline up to five). Produces arriving meanwhile go into the next object.
public actor ProduceRouter {
    struct Pending {
        var append: ReplicaManager.Append
        var leader: NodeID
        var epoch: LeaderEpoch
        var continuation: CheckedContinuation<AppendResult, Never>
    }

    private let settings: BrokerSettings
    private let store: any ObjectStore
    private let writer: any MetadataWriter
    private let metadata: any MetadataSource
    private let peers: KafkaClient
    private let logger: Logger
    private let clientId: String
    private let timeout: Duration
    private var pending: [Pending] = []
    private var flushing = false
    /// Connections for group requests forwarded to coordinators in other zones.
    public nonisolated let forwarder: ZoneForwarder
    /// Object ids prepared ahead, so a routed produce waits for no controller write.
    private var spare: [(id: ObjectID, deadline: Millis)] = []
    private var refilling = false
    /// Ids to release, sent together in the background.
    private var unreleased: [ObjectID] = []
    private var releasing = false
    static let spareIds = 2

    static let objects = Counter(label: "floe_broker_routed_objects_total")
    static let routedBytes = Counter(label: "floe_broker_routed_bytes_total")
    static let claimFailures = Counter(label: "floe_broker_routed_claim_failures_total")

    public init(
        settings: BrokerSettings, store: any ObjectStore, writer: any MetadataWriter, metadata: any MetadataSource, logger: Logger,
        timeout: Duration = .seconds(30)
    ) {
        self.settings = settings
        self.store = store
        self.writer = writer
        self.metadata = metadata
        self.peers = KafkaClient(logger: logger)
        self.logger = logger
        self.clientId = ClientZone.tagging("floe-broker-\(settings.nodeId)", zone: settings.zone)
        self.timeout = timeout
        self.forwarder = ZoneForwarder(metadata: metadata)
    }

    /// Routes one checked produce for a partition `leader` leads at `epoch`; returns the leader's answer.
    public func route(_ append: ReplicaManager.Append, leader: NodeID, epoch: LeaderEpoch) async -> AppendResult {
        await withCheckedContinuation { continuation in
            pending.append(Pending(append: append, leader: leader, epoch: epoch, continuation: continuation))
            if !flushing {
                flushing = true
                Task { await self.flushLoop() }
            }
        }
    }

    /// Sends `request` to broker `leader` (control calls a zone-routing broker makes for its clients,
    /// e.g. OffsetForLeaderEpoch of partitions led from another zone).
    public func call<R: KafkaRequest>(_ request: R, version: Int16, leader: NodeID) async throws -> R.Response {
        let state = await metadata.state
        guard let node = state.nodes[leader], node.state == .active else { throw RoutingError("broker \(leader) is not active") }
        let endpoint = try parseEndpoint(node.registration.listener)
        return try await peers.send(request, version: version, to: endpoint, clientId: clientId, timeout: .seconds(10))
    }

    public func close() async {
        await peers.closeAll()
        await forwarder.closeAll()
    }

    private func flushLoop() async {
        // The linger window lets produces of many clients share one object (a timer, not a synchronisation).
        if settings.routedLingerMs > 0 { try? await LoopTimers.sleep(for: .milliseconds(settings.routedLingerMs)) }
        while !pending.isEmpty {
            let batch = pending
            pending = []
            let results = await write(batch)
            for (item, result) in zip(batch, results) { item.continuation.resume(returning: result) }
        }
        flushing = false
    }

    /// Writes `batch` as one routed object, claims it at every leader, then releases it; one result per item.
    private func write(_ batch: [Pending]) async -> [AppendResult] {
        var object = ByteBuffer()
        object.reserveCapacity(batch.reduce(0) { $0 + $1.append.records.readableBytes })
        var ranges: [(position: Int64, length: Int32, crc: UInt32)] = []
        for item in batch {
            var records = item.append.records
            let position = Int64(object.writerIndex)
            let crc = CRC32C.checksum(records)
            let length = Int32(records.readableBytes)
            object.writeBuffer(&records)
            ranges.append((position, length, crc))
        }
        let id: ObjectID
        do {
            id = try await nextId()
        } catch {
            logger.warning("cannot prepare a routed object", metadata: ["error": "\(error)"])
            return batch.map { _ in .failure(.kafkaStorageError, "routing to another zone failed: \(error)") }
        }
        let key = ObjectKey.make(id: UInt64(id), kind: .routed)
        do {
            try await store.put(key, object)
        } catch {
            logger.warning("cannot write a routed object", metadata: ["key": "\(key)", "error": "\(error)"])
            release(id)
            return batch.map { _ in .failure(.kafkaStorageError, "routing to another zone failed: \(error)") }
        }
        Self.objects.increment()
        Self.routedBytes.increment(by: object.readableBytes)
        var byLeader: [NodeID: [Int]] = [:]
        for (index, item) in batch.enumerated() { byLeader[item.leader, default: []].append(index) }
        var results = [AppendResult](repeating: .failure(.unknownServerError), count: batch.count)
        await withTaskGroup(of: [(Int, AppendResult)].self) { group in
            for (leader, indices) in byLeader {
                let items = indices.map { (index: $0, item: batch[$0], range: ranges[$0]) }
                group.addTask {
                    let answers = await self.claim(objectId: id, key: key, leader: leader, items: items.map { ($0.item.append.key, $0.item.epoch, $0.range) })
                    return Array(zip(indices, answers))
                }
            }
            for await answered in group {
                for (index, result) in answered { results[index] = result }
            }
        }
        release(id)
        return results
    }

    /// Sends one claim to `leader` (retried on a lost connection: the leader answers a repeated claim
    /// from its record of the first); one result per item, in order.
    private func claim(
        objectId: ObjectID, key: String, leader: NodeID,
        items: [(key: PartitionKey, epoch: LeaderEpoch, range: (position: Int64, length: Int32, crc: UInt32))]
    ) async -> [AppendResult] {
        var request = RoutedClaimRequest()
        request.objectId = objectId
        request.objectKey = key
        request.sourceZone = settings.zone
        request.timeoutMs = Int32(clamping: timeout.components.seconds * 1000)
        for item in items {
            var partition = RoutedClaimRequest.ClaimPartition()
            partition.index = item.key.partition
            partition.leaderEpoch = item.epoch
            partition.position = item.range.position
            partition.length = item.range.length
            partition.crc = Int32(bitPattern: item.range.crc)
            if let last = request.topics.indices.last, request.topics[last].name == item.key.topic {
                request.topics[last].partitions.append(partition)
            } else {
                var topic = RoutedClaimRequest.ClaimTopic()
                topic.name = item.key.topic
                topic.partitions = [partition]
                request.topics.append(topic)
            }
        }
        var lastError: any Error = RoutingError("no attempt")
        for attempt in 0..<3 {
            let state = await metadata.state
            guard let node = state.nodes[leader], node.state == .active, let endpoint = try? parseEndpoint(node.registration.listener) else {
                return items.map { _ in .failure(.notLeaderOrFollower, "leader \(leader) is gone") }
            }
            do {
                let response = try await peers.send(request, version: 0, to: endpoint, clientId: clientId, timeout: timeout + .seconds(5))
                return Self.results(of: response, count: items.count)
            } catch {
                lastError = error
                Self.claimFailures.increment()
                logger.info("routed claim failed", metadata: ["leader": "\(leader)", "attempt": "\(attempt + 1)", "error": "\(error)"])
                _ = await metadata.waitForApplied(after: state.lastAppliedIndex, timeout: .milliseconds(200 << attempt))
            }
        }
        return items.map { _ in .failure(.notLeaderOrFollower, "claim at leader \(leader) failed: \(lastError)") }
    }

    /// The response's results in request order; a request-level error or a short answer fails them all.
    static func results(of response: RoutedClaimResponse, count: Int) -> [AppendResult] {
        if response.errorCode != 0 {
            let code = KafkaErrorCode(rawValue: response.errorCode) ?? .unknownServerError
            return (0..<count).map { _ in .failure(code, response.errorMessage) }
        }
        let answers = response.topics.flatMap(\.partitions).map { partition in
            AppendResult(
                errorCode: partition.errorCode, errorMessage: partition.errorMessage, baseOffset: partition.baseOffset,
                logAppendTime: partition.logAppendTimeMs, logStartOffset: partition.logStartOffset)
        }
        guard answers.count == count else { return (0..<count).map { _ in .failure(.unknownServerError, "the leader answered \(answers.count) of \(count) claims") } }
        return answers
    }

    /// A prepared id with at least half its lifetime left: a spare one, else one prepared now. Spares
    /// are topped up in the background.
    private func nextId() async throws -> ObjectID {
        let now = wallClockMillis()
        while let first = spare.first, first.deadline - now < settings.routedObjectLifetimeMs / 2 {
            spare.removeFirst()
            release(first.id)
        }
        defer { refill() }
        if !spare.isEmpty { return spare.removeFirst().id }
        return try await prepare().id
    }

    private func prepare() async throws -> (id: ObjectID, deadline: Millis) {
        let deadline = wallClockMillis() + settings.routedObjectLifetimeMs
        let prepared = try await writer.writeWithIndex(.prepareObject(kind: .routed, deadline: deadline)).result
        guard case .objectPrepared(let id) = prepared else { throw RoutingError("prepareObject answered \(prepared)") }
        return (id, deadline)
    }

    private func refill() {
        guard !refilling, spare.count < Self.spareIds else { return }
        refilling = true
        Task {
            while await self.needsSpare() {
                guard let prepared = try? await self.prepare() else { break }
                await self.addSpare(prepared)
            }
            await self.refilled()
        }
    }

    private func needsSpare() -> Bool { spare.count < Self.spareIds }
    private func addSpare(_ prepared: (id: ObjectID, deadline: Millis)) { spare.append(prepared) }
    private func refilled() { refilling = false }

    /// Claimed (or abandoned): released in the background, together with others, and the compactor's
    /// GC deletes it after the grace period. One whose release fails expires at its deadline.
    private func release(_ id: ObjectID) {
        unreleased.append(id)
        guard !releasing else { return }
        releasing = true
        Task { await self.releaseLoop() }
    }

    private func releaseLoop() async {
        while !unreleased.isEmpty {
            let ids = unreleased
            unreleased = []
            do {
                _ = try await writer.writeWithIndex(.releaseObjects(ids, now: wallClockMillis()))
            } catch {
                logger.info("routed objects not released; they expire at their deadline", metadata: ["objects": "\(ids)", "error": "\(error)"])
            }
        }
        releasing = false
    }
}

struct RoutingError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
