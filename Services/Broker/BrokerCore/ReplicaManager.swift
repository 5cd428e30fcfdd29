import ClusterMetadata
import ControllerClient
import DequeModule
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The outcome of appending one partition's record set.
public struct AppendResult: Sendable, Hashable {
    public var errorCode: Int16
    public var errorMessage: String?
    public var baseOffset: Int64 = -1
    /// The broker time stamped into LogAppendTime batches, -1 for CreateTime.
    public var logAppendTime: Int64 = -1
    public var logStartOffset: Int64 = -1

    public static func failure(_ code: KafkaErrorCode, _ message: String? = nil) -> AppendResult {
        AppendResult(errorCode: code.rawValue, errorMessage: message)
    }
}

/// What a reader needs to know about a partition this broker leads.
public struct PartitionView: Sendable, Hashable {
    public var topicId: KafkaUUID
    public var streamId: StreamID
    public var leaderEpoch: LeaderEpoch
    public var highWatermark: Int64
    public var logEndOffset: Int64
    public var logStartOffset: Int64
    /// The offset the current leader epoch started at.
    public var epochStartOffset: Int64
    /// The WAL writer holding the stream's uncommitted tail.
    public var walWriter: NodeID
}

/// A change in what this broker leads, for services that keep state per led partition (the group coordinator).
public enum LeadershipEvent: Sendable, Hashable {
    /// This broker took over the partition at `epoch` and accepts writes from `endOffset` on.
    case ready(PartitionKey, epoch: LeaderEpoch, endOffset: Int64)
    /// This broker no longer leads the partition (at `epoch`).
    case resigned(PartitionKey, epoch: LeaderEpoch)
}

/// Why a partition cannot be served by this broker right now.
public enum PartitionUnavailable: Error, Sendable {
    /// Another broker leads it (or nobody does): NOT_LEADER_OR_FOLLOWER.
    case notLeader
    /// This broker leads it but is still taking over the tail: NOT_LEADER_OR_FOLLOWER too, which
    /// every client retries after refreshing metadata.
    case loading
    /// The topic or partition does not exist.
    case unknown
    /// Any other partition-level error.
    case coded(KafkaErrorCode)

    public var errorCode: KafkaErrorCode {
        switch self {
        case .notLeader, .loading: .notLeaderOrFollower
        case .unknown: .unknownTopicOrPartition
        case .coded(let code): code
        }
    }
}

/// The partitions this broker leads: taking over a stream's tail when leadership arrives,
/// assigning offsets, sending appends to the WAL writer in offset order, advancing high watermarks
/// as appends become durable, and the log cache of acknowledged batches.
public actor ReplicaManager {
    /// The manager's code runs on its event loop, so a request handler already there (one loop per broker
    /// by default) queues a produce without a task, and WAL answers are applied without one.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { eventLoop.executor.asUnownedSerialExecutor() }

    final class Partition {
        enum Phase { case recovering, ready, resyncing }

        struct Pending {
            var number: UInt64
            var generation: UInt64
            var baseOffset: Int64
            var nextOffset: Int64
            var bytes: ByteBuffer
            var logAppendTime: Int64
            var outcome: WALCallError??
            var promise: EventLoopPromise<AppendResult>
        }

        let key: PartitionKey
        let topicId: KafkaUUID
        let streamId: StreamID
        let epoch: LeaderEpoch
        var phase = Phase.recovering
        var generation: UInt64 = 0
        var writer: NodeID = -1
        var connection: KafkaConnection?
        var nextOffset: Int64 = 0
        var highWatermark: Int64 = 0
        var logStartOffset: Int64 = 0
        var epochStartOffset: Int64 = 0
        var pending: Deque<Pending> = []
        var task: Task<Void, Never>?
        var producers = ProducerStateTable()
        /// When expired producers were last forgotten (broker wall clock, ms).
        var producersSweptAt: Int64 = 0
        /// Numbers appends, so a duplicate batch can wait for the append that wrote the original.
        var appendCounter: UInt64 = 0
        /// Appends not yet durable, by number.
        var pendingResults: [UInt64: EventLoopFuture<AppendResult>] = [:]

        init(key: PartitionKey, topicId: KafkaUUID, streamId: StreamID, epoch: LeaderEpoch) {
            self.key = key
            self.topicId = topicId
            self.streamId = streamId
            self.epoch = epoch
        }
    }

    /// One batch of a record set: where it starts in `records`, its offset count, and its producer fields.
    public struct BatchInfo: Sendable, Hashable {
        public var start: Int
        public var count: Int64
        /// -1 for batches of non-idempotent producers.
        public var producerId: Int64
        public var producerEpoch: Int16
        public var baseSequence: Int32

        public init(start: Int, count: Int64, producerId: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1) {
            self.start = start
            self.count = count
            self.producerId = producerId
            self.producerEpoch = producerEpoch
            self.baseSequence = baseSequence
        }

        var lastSequence: Int32 {
            let last = Int64(baseSequence) + count - 1
            return last > Int64(Int32.max) ? Int32(truncatingIfNeeded: last - Int64(Int32.max) - 1) : Int32(last)
        }
    }

    /// A record set ready to append: its batches checked, and where they start in `records`.
    public struct Append: Sendable {
        public var key: PartitionKey
        public var records: ByteBuffer
        public var batches: [BatchInfo]
        /// When set, every batch is switched to LogAppendTime with this time.
        public var logAppendTime: Int64?

        public init(key: PartitionKey, records: ByteBuffer, batches: [BatchInfo], logAppendTime: Int64?) {
            self.key = key
            self.records = records
            self.batches = batches
            self.logAppendTime = logAppendTime
        }

        /// Batches without producer ids (internal writers such as the group coordinator).
        public init(key: PartitionKey, records: ByteBuffer, batches: [(start: Int, count: Int64)], logAppendTime: Int64?) {
            self.init(key: key, records: records, batches: batches.map { BatchInfo(start: $0.start, count: $0.count) }, logAppendTime: logAppendTime)
        }
    }

    let nodeId: NodeID
    let zone: String
    let wal: WALClient
    let committed: any CommittedDataReader
    /// Set in WAL-bypass mode: appends go straight into committed objects.
    let direct: DirectObjectAppender?
    let metadata: any MetadataSource
    let writer: any MetadataWriter
    let logger: Logger
    public nonisolated let eventLoop: any EventLoop
    /// Kafka's `producer.id.expiration.ms`: idempotent producers silent this long are forgotten.
    let producerIdExpirationMs: Int64
    /// Broker wall clock in ms (the broker's one clock, `BrokerContext.now`).
    let now: @Sendable () -> Int64
    private var partitions: [PartitionKey: Partition] = [:]
    private var cache: LogCache
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextWaiter: UInt64 = 0
    private var knownState = MetadataState() {
        didSet { published.withLockedValue { $0 = knownState } }
    }
    /// The image `apply` last saw, readable without an actor hop (the produce path reads it per request).
    private nonisolated let published = NIOLockedValueBox(MetadataState())

    /// The metadata image this broker last acted on.
    public nonisolated var latestState: MetadataState { published.withLockedValue { $0 } }
    private var subscribers: [UInt64: AsyncStream<LeadershipEvent>.Continuation] = [:]
    private var nextSubscriber: UInt64 = 0

    public init(
        nodeId: NodeID, zone: String, wal: WALClient, committed: any CommittedDataReader, metadata: any MetadataSource,
        writer: any MetadataWriter, logCacheBytes: Int, direct: DirectObjectAppender? = nil,
        producerIdExpirationMs: Int64 = 86_400_000, now: @escaping @Sendable () -> Int64,
        logger: Logger
    ) {
        self.producerIdExpirationMs = producerIdExpirationMs
        self.now = now
        self.committed = committed
        self.direct = direct
        self.nodeId = nodeId
        self.zone = zone
        self.wal = wal
        self.metadata = metadata
        self.writer = writer
        self.logger = logger
        self.cache = LogCache(capacity: logCacheBytes)
        self.eventLoop = MultiThreadedEventLoopGroup.singleton.any()
    }

    // MARK: Leadership

    /// Brings the led partitions in line with a new metadata image: takes over partitions newly led
    /// here (or led again under a newer epoch) and lets go of the others.
    public func apply(_ state: MetadataState) {
        knownState = state
        var led: Set<PartitionKey> = []
        for name in state.topicNames {
            guard let topic = state.topics[name] else { continue }
            for (index, record) in topic.partitions.enumerated() where record.leader == nodeId {
                let key = PartitionKey(topic: name, partition: Int32(index))
                led.insert(key)
                if let current = partitions[key], current.epoch == record.leaderEpoch, current.topicId == topic.topicId {
                    if let stream = state.streams[record.streamId] {
                        current.logStartOffset = max(current.logStartOffset, stream.logStartOffset)
                    }
                    continue
                }
                if let old = partitions[key] { resign(old) }
                let partition = Partition(key: key, topicId: topic.topicId, streamId: record.streamId, epoch: record.leaderEpoch)
                partitions[key] = partition
                partition.task = Task { await self.takeOver(partition) }
            }
        }
        for (key, partition) in partitions where !led.contains(key) {
            resign(partition)
            partitions[key] = nil
        }
        wakeWaiters()
    }

    /// Leadership changes from now on, starting with a `.ready` for every partition already led and ready.
    public func leadershipEvents() -> AsyncStream<LeadershipEvent> {
        let (stream, continuation) = AsyncStream<LeadershipEvent>.makeStream()
        let id = nextSubscriber
        nextSubscriber &+= 1
        subscribers[id] = continuation
        for partition in partitions.values.sorted(by: { $0.key < $1.key }) where partition.phase == .ready {
            continuation.yield(.ready(partition.key, epoch: partition.epoch, endOffset: partition.highWatermark))
        }
        continuation.onTermination = { _ in Task { await self.unsubscribe(id) } }
        return stream
    }

    private func unsubscribe(_ id: UInt64) {
        subscribers[id] = nil
    }

    private func publish(_ event: LeadershipEvent) {
        for continuation in subscribers.values { continuation.yield(event) }
    }

    private func resign(_ partition: Partition) {
        publish(.resigned(partition.key, epoch: partition.epoch))
        partition.task?.cancel()
        partition.generation &+= 1
        let pending = partition.pending
        partition.pending.removeAll()
        partition.pendingResults.removeAll()
        // Appends already sent may still become durable; their producers retry against the new leader.
        for item in pending { item.promise.succeed(.failure(.notLeaderOrFollower, "leadership moved")) }
        cache.drop(partition.key)
        logger.info("no longer leading", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "epoch": "\(partition.epoch)"])
    }

    private func isCurrent(_ partition: Partition) -> Bool {
        partitions[partition.key] === partition
    }

    /// The WAL writer this broker appends `stream` through: the stream's current writer when it is a
    /// live writer of this zone, else the lowest live writer of this zone, else any live writer.
    static func chooseWriter(_ state: MetadataState, zone: String, current: NodeID) -> NodeID? {
        let writers = state.sortedNodes.filter { $0.kind == .walWriter && $0.state == .active }
        if let node = writers.first(where: { $0.id == current }), node.zone == zone { return current }
        return writers.first(where: { $0.zone == zone })?.id ?? writers.first?.id
    }

    static func endpoint(_ state: MetadataState, _ node: NodeID) -> KafkaEndpoint? {
        guard let record = state.nodes[node], let parsed = try? parseEndpoint(record.registration.listener) else { return nil }
        return parsed
    }

    /// Fences the stream at the writer holding its tail and recovers the tail, then accepts writes
    /// (DESIGN §6 "Leader change"). Retries until it succeeds or leadership moves on.
    private func takeOver(_ partition: Partition) async {
        var backoff = Duration.milliseconds(50)
        while !Task.isCancelled, isCurrent(partition) {
            do {
                try await recover(partition)
                return
            } catch let error as WALCallError where error.code == KafkaErrorCode.fencedLeaderEpoch.rawValue {
                logger.info("a newer leader fenced the stream", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)"])
                return
            } catch {
                logger.warning(
                    "taking over the partition failed; retrying",
                    metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "error": "\(error)"])
            }
            do { try await LoopTimers.sleep(for: backoff) } catch { return }
            backoff = min(backoff * 2, .seconds(1))
        }
    }

    struct TakeOverError: Error, CustomStringConvertible {
        var description: String
    }

    private func recover(_ partition: Partition) async throws {
        let state = await metadata.state
        guard isCurrent(partition) else { return }
        guard let stream = state.streams[partition.streamId] else { throw TakeOverError(description: "stream \(partition.streamId) not in metadata yet") }
        guard stream.epoch == partition.epoch else {
            throw TakeOverError(description: "metadata has stream epoch \(stream.epoch), leading with \(partition.epoch)")
        }
        if direct != nil {
            // Everything acknowledged is committed: the stream continues at its committed end, and a
            // stale leader's late commit is refused by epoch at the controller.
            let fresh = try await barrier(partition, writer: -1)
            let producers = try await rebuildProducers(
                stream: partition.streamId, writer: -1, logStart: fresh.logStartOffset, end: fresh.committedEnd)
            guard isCurrent(partition), !Task.isCancelled else { return }
            becomeReady(partition, writer: -1, connection: nil, end: fresh.committedEnd, logStart: fresh.logStartOffset, producers: producers)
            return
        }
        guard var chosen = Self.chooseWriter(state, zone: zone, current: stream.walWriter) else {
            throw TakeOverError(description: "no live WAL writer")
        }
        let previous = stream.walWriter
        var durableEnd: Int64 = -1
        if previous != -1, state.nodes[previous] != nil {
            guard let endpoint = Self.endpoint(state, previous) else { throw TakeOverError(description: "WAL writer \(previous) has no endpoint") }
            durableEnd = try await wal.fence(endpoint, stream: partition.streamId, epoch: partition.epoch)
        }
        // The committed end must be read after the fence, from an image that has every commit made
        // before it: a writer that uploaded, trimmed and restarted answers -1 and only the metadata
        // knows where the stream ends.
        let usable = previous != -1 && state.nodes[previous]?.state == .active ? previous : chosen
        let fresh = try await barrier(partition, writer: usable)
        var end = max(fresh.committedEnd, durableEnd)
        if previous != -1, previous != chosen, durableEnd > fresh.committedEnd, let endpoint = Self.endpoint(state, previous) {
            // The tail moves to another writer: have the old one commit it first, so the new
            // writer's first upload continues exactly where the committed stream ends.
            try await wal.flush(endpoint, stream: partition.streamId, timeout: .seconds(10))
            end = try await waitForCommittedEnd(partition.streamId, atLeast: durableEnd)
        }
        if chosen != usable {
            guard let endpoint = Self.endpoint(state, chosen) else { throw TakeOverError(description: "WAL writer \(chosen) has no endpoint") }
            let held = try await wal.fence(endpoint, stream: partition.streamId, epoch: partition.epoch)
            if held != -1, held != end {
                // That writer still remembers an older stretch of this stream; keep the previous writer.
                guard usable == previous else {
                    throw TakeOverError(description: "WAL writer \(chosen) holds the stream up to \(held), expected \(end)")
                }
                chosen = previous
            } else {
                _ = try await barrier(partition, writer: chosen)
            }
        }
        guard let endpoint = Self.endpoint(state, chosen) else { throw TakeOverError(description: "WAL writer \(chosen) has no endpoint") }
        let producers = try await rebuildProducers(
            stream: partition.streamId, writer: chosen, logStart: fresh.logStartOffset, end: end)
        let connection = try await wal.appendConnection(endpoint)
        guard isCurrent(partition), !Task.isCancelled else { return }
        becomeReady(partition, writer: chosen, connection: connection, end: end, logStart: fresh.logStartOffset, producers: producers)
    }

    /// Records `writer` as the stream's WAL writer at the controller and waits until the image has
    /// applied it; returns the stream as that image has it. Being a controller write, it orders
    /// everything committed before it (e.g. a writer's last upload) into the returned record.
    private func barrier(_ partition: Partition, writer node: NodeID) async throws -> StreamRecord {
        let (result, index) = try await writer.writeWithIndex(.setStreamWriter(streamId: partition.streamId, epoch: partition.epoch, writer: node))
        if case .error(let error) = result {
            if error.code == MetadataErrorCode.fencedLeaderEpoch { throw WALCallError(code: KafkaErrorCode.fencedLeaderEpoch.rawValue, message: error.message) }
            throw TakeOverError(description: "setStreamWriter: \(error)")
        }
        guard await metadata.waitForVersion(index, timeout: .seconds(10)) else {
            throw TakeOverError(description: "metadata image did not reach version \(index)")
        }
        guard let stream = await metadata.state.streams[partition.streamId] else {
            throw TakeOverError(description: "stream \(partition.streamId) deleted")
        }
        return stream
    }

    private func becomeReady(
        _ partition: Partition, writer: NodeID, connection: KafkaConnection?, end: Int64, logStart: Int64, producers: ProducerStateTable
    ) {
        partition.producers = producers
        partition.writer = writer
        partition.connection = connection
        partition.nextOffset = end
        partition.highWatermark = end
        partition.epochStartOffset = end
        partition.logStartOffset = max(logStart, partition.logStartOffset)
        partition.phase = .ready
        partition.generation &+= 1
        cache.drop(partition.key)
        publish(.ready(partition.key, epoch: partition.epoch, endOffset: end))
        logger.info(
            "leading", metadata: [
                "partition": "\(partition.key.topic)-\(partition.key.partition)", "epoch": "\(partition.epoch)",
                "end_offset": "\(end)", "wal_writer": "\(writer)",
            ])
        wakeWaiters()
    }

    /// Waits until the metadata image shows the stream committed up to `offset`; returns the committed end.
    private func waitForCommittedEnd(_ stream: StreamID, atLeast offset: Int64) async throws -> Int64 {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(15))
        while clock.now < deadline {
            let state = await metadata.state
            guard let record = state.streams[stream] else { throw TakeOverError(description: "stream \(stream) deleted") }
            if record.committedEnd >= offset { return record.committedEnd }
            _ = await metadata.waitForApplied(after: state.lastAppliedIndex, timeout: .milliseconds(500))
            try Task.checkCancellation()
        }
        throw TakeOverError(description: "stream \(stream) not committed up to \(offset) in time")
    }

    /// After a failed append the stream's durable end at the writer is unknown: learn it again
    /// through a fence at the same epoch, then accept writes from there.
    private func resync(_ partition: Partition) async {
        var backoff = Duration.milliseconds(20)
        while !Task.isCancelled, isCurrent(partition) {
            let state = knownState
            if direct != nil {
                // Whatever was committed is the stream now.
                do {
                    let stream = try await barrier(partition, writer: -1)
                    guard isCurrent(partition) else { return }
                    let producers = try await rebuildProducers(
                        stream: partition.streamId, writer: -1, logStart: stream.logStartOffset, end: stream.committedEnd)
                    guard isCurrent(partition) else { return }
                    partition.producers = producers
                    partition.nextOffset = stream.committedEnd
                    partition.highWatermark = max(partition.highWatermark, stream.committedEnd)
                    partition.generation &+= 1
                    partition.phase = .ready
                    wakeWaiters()
                    return
                } catch {
                    logger.warning("resync failed; retrying", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "error": "\(error)"])
                }
                do { try await LoopTimers.sleep(for: backoff) } catch { return }
                backoff = min(backoff * 2, .seconds(1))
                continue
            }
            do {
                guard let endpoint = Self.endpoint(state, partition.writer) else { throw TakeOverError(description: "WAL writer \(partition.writer) unknown") }
                let durableEnd = try await wal.fence(endpoint, stream: partition.streamId, epoch: partition.epoch)
                let fresh = try await barrier(partition, writer: partition.writer)
                let end = max(durableEnd, fresh.committedEnd, partition.highWatermark)
                // Appends that failed may or may not be durable: learn the producers' state from what is.
                let producers = try await rebuildProducers(
                    stream: partition.streamId, writer: partition.writer, logStart: partition.logStartOffset, end: end)
                let connection = try await wal.appendConnection(endpoint)
                guard isCurrent(partition) else { return }
                partition.producers = producers
                partition.nextOffset = end
                partition.highWatermark = end
                partition.connection = connection
                partition.generation &+= 1
                partition.phase = .ready
                logger.info("append path recovered", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "end_offset": "\(end)"])
                wakeWaiters()
                return
            } catch let error as WALCallError where error.code == KafkaErrorCode.fencedLeaderEpoch.rawValue {
                logger.info("stream fenced by a newer leader", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)"])
                return
            } catch {
                logger.warning("resync failed; retrying", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "error": "\(error)"])
            }
            do { try await LoopTimers.sleep(for: backoff) } catch { return }
            backoff = min(backoff * 2, .seconds(1))
        }
    }

    /// How far back from the end a new leader (or a resync) reads to rebuild idempotent producers'
    /// state: well beyond the five in-flight batches a producer may retry.
    static let producerScanOffsets: Int64 = 20_000

    /// How often (at most) a partition's expired producers are looked for, on its next append;
    /// half the expiry when that is shorter.
    static let producerSweepIntervalMs: Int64 = 60_000

    /// Producer state rebuilt from the durable batches in [max(logStart, end - producerScanOffsets), end).
    private func rebuildProducers(stream: StreamID, writer: NodeID, logStart: Int64, end: Int64) async throws -> ProducerStateTable {
        var table = ProducerStateTable()
        var offset = max(logStart, end - Self.producerScanOffsets)
        var rounds = 0
        while offset < end, rounds < 100_000 {
            rounds += 1
            let state = await metadata.state
            guard let record = state.streams[stream] else { break }
            let bytes: ByteBuffer
            if offset >= record.committedEnd {
                guard let endpoint = Self.endpoint(state, writer) else { throw TakeOverError(description: "WAL writer \(writer) unknown") }
                do {
                    bytes = try await wal.read(endpoint, stream: stream, from: offset, maxBytes: 4 << 20)
                } catch let error as WALCallError where error.code == KafkaErrorCode.offsetNotAvailable.rawValue {
                    // Uploaded meanwhile: read it from its object once the commit shows.
                    _ = await metadata.waitForApplied(after: state.lastAppliedIndex, timeout: .milliseconds(500))
                    continue
                }
            } else {
                bytes = try await committed.readCommitted(stream: stream, from: offset, maxBytes: 4 << 20, state: state)
            }
            var iterator = RecordSetIterator(bytes)
            var progressed = false
            while let batch = try iterator.next(), batch.baseOffset < end {
                guard batch.lastOffset >= offset else { continue }
                table.replay(batch, now: now())
                offset = batch.nextOffset
                progressed = true
            }
            if !progressed { break }
        }
        return table
    }

    // MARK: Produce

    /// Assigns offsets to `appends` and queues them at the WAL writer, in order, before returning;
    /// each future completes once its append is durable (or failed).
    public func enqueue(_ appends: [Append]) -> [EventLoopFuture<AppendResult>] {
        appends.map { enqueueOne($0) }
    }

    private func enqueueOne(_ append: Append) -> EventLoopFuture<AppendResult> {
        guard let partition = partitions[append.key] else {
            let code: KafkaErrorCode = knownState.partition(append.key) == nil ? .unknownTopicOrPartition : .notLeaderOrFollower
            return eventLoop.makeSucceededFuture(.failure(code))
        }
        guard partition.phase == .ready, direct != nil || partition.connection != nil else {
            return eventLoop.makeSucceededFuture(.failure(.notLeaderOrFollower, "partition is being taken over"))
        }
        // Idempotent producers: refuse fenced and out-of-order batches, answer retries with the original offset.
        let wallNow = now()
        if wallNow - partition.producersSweptAt >= min(Self.producerSweepIntervalMs, producerIdExpirationMs / 2) {
            partition.producersSweptAt = wallNow
            partition.producers.expire(before: wallNow - producerIdExpirationMs)
        }
        var verdicts: [ProducerStateTable.Verdict] = []
        for batch in append.batches where batch.producerId >= 0 {
            let verdict = partition.producers.check(
                id: batch.producerId, epoch: batch.producerEpoch, firstSequence: batch.baseSequence, lastSequence: batch.lastSequence)
            if case .reject(let code, let message) = verdict { return eventLoop.makeSucceededFuture(.failure(code, message)) }
            verdicts.append(verdict)
        }
        if let first = verdicts.first, case .duplicate(let original) = first {
            guard append.batches.count == 1 else {
                return eventLoop.makeSucceededFuture(.failure(.outOfOrderSequenceNumber, "a retried batch must be sent alone"))
            }
            let answer = AppendResult(errorCode: 0, baseOffset: original.baseOffset, logAppendTime: -1, logStartOffset: partition.logStartOffset)
            guard let pending = partition.pendingResults[original.append] else { return eventLoop.makeSucceededFuture(answer) }
            // The original is still on its way to disk: answer as it is answered.
            return pending.map { $0.errorCode == 0 ? answer : $0 }
        }
        if verdicts.contains(where: { if case .duplicate = $0 { true } else { false } }) {
            return eventLoop.makeSucceededFuture(.failure(.outOfOrderSequenceNumber, "a retried batch must be sent alone"))
        }
        // A copy of its own: the request's bytes are a slice of the whole request frame, which the
        // log cache would otherwise keep alive (and undercount) for as long as it holds the batch.
        var records = ByteBufferAllocator().buffer(capacity: append.records.readableBytes)
        records.writeImmutableBuffer(append.records)
        let base = partition.nextOffset
        var next = base
        let number = partition.appendCounter &+ 1
        // Recorded in the table only once the append is on its way, so a refused one leaves no trace.
        var recorded: [(id: Int64, epoch: Int16, batch: ProducerStateTable.BatchMetadata)] = []
        do {
            for batch in append.batches {
                let index = records.readerIndex + batch.start
                try RecordBatch.stamp(batchAt: index, in: &records, baseOffset: next, partitionLeaderEpoch: partition.epoch)
                if let time = append.logAppendTime {
                    try RecordBatch.setLogAppendTime(batchAt: index, in: &records, timestamp: time)
                }
                if batch.producerId >= 0 {
                    recorded.append(
                        (batch.producerId, batch.producerEpoch,
                         .init(
                            firstSequence: batch.baseSequence, lastSequence: batch.lastSequence, baseOffset: next,
                            lastOffset: next + batch.count - 1, append: number)))
                }
                next += batch.count
            }
        } catch {
            return eventLoop.makeSucceededFuture(.failure(.corruptMessage, "\(error)"))
        }
        guard next > base else { return eventLoop.makeSucceededFuture(.failure(.invalidRecord, "no records")) }
        let future: EventLoopFuture<WALCallError?>
        if let direct {
            future = direct.enqueue(stream: partition.streamId, epoch: partition.epoch, baseOffset: base, lastOffset: next - 1, batches: records)
        } else if let connection = partition.connection {
            do {
                future = try wal.enqueueAppend(
                    on: connection, stream: partition.streamId, epoch: partition.epoch, baseOffset: base, lastOffset: next - 1, batches: records
                ).map { WALClient.appendError($0) }
            } catch {
                return eventLoop.makeSucceededFuture(.failure(.unknownServerError, "\(error)"))
            }
        } else {
            return eventLoop.makeSucceededFuture(.failure(.notLeaderOrFollower, "no append path"))
        }
        for entry in recorded { partition.producers.record(id: entry.id, epoch: entry.epoch, batch: entry.batch, now: wallNow) }
        partition.appendCounter = number
        partition.nextOffset = next
        let promise = eventLoop.makePromise(of: AppendResult.self)
        let generation = partition.generation
        partition.pendingResults[number] = promise.futureResult
        partition.pending.append(
            Partition.Pending(
                number: number, generation: generation, baseOffset: base, nextOffset: next, bytes: records,
                logAppendTime: append.logAppendTime ?? -1, outcome: nil, promise: promise))
        let key = append.key
        let identity = ObjectIdentifier(partition)
        // Applied on this actor's loop straight from the WAL answer's callback: no task per append.
        future.hop(to: eventLoop).whenComplete { result in
            let outcome: WALCallError?
            switch result {
            case .success(let error): outcome = error
            case .failure(let error):
                outcome = WALCallError(code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "WAL writer connection: \(error)")
            }
            self.assumeIsolated { manager in
                manager.answered(key, identity: identity, generation: generation, baseOffset: base, outcome: outcome)
            }
        }
        return promise.futureResult
    }

    private func answered(_ key: PartitionKey, identity: ObjectIdentifier, generation: UInt64, baseOffset: Int64, outcome: WALCallError?) {
        // A resigned partition already answered its pending appends.
        guard let partition = partitions[key], ObjectIdentifier(partition) == identity,
              let index = partition.pending.firstIndex(where: { $0.generation == generation && $0.baseOffset == baseOffset }) else { return }
        partition.pending[index].outcome = .some(outcome)
        var advanced = false
        while let head = partition.pending.first, let result = head.outcome {
            partition.pending.removeFirst()
            partition.pendingResults[head.number] = nil
            if let error = result {
                fail(partition, head, error)
                continue
            }
            partition.highWatermark = max(partition.highWatermark, head.nextOffset)
            cache.append(key, baseOffset: head.baseOffset, nextOffset: head.nextOffset, bytes: head.bytes)
            head.promise.succeed(
                AppendResult(errorCode: 0, baseOffset: head.baseOffset, logAppendTime: head.logAppendTime, logStartOffset: partition.logStartOffset))
            advanced = true
        }
        if advanced { wakeWaiters() }
    }

    /// An append failed: it and every later one fail (the writer refuses appends that do not continue
    /// the stream), and the partition learns its durable end again before accepting more.
    private func fail(_ partition: Partition, _ failed: Partition.Pending, _ error: WALCallError) {
        let code: KafkaErrorCode
        switch error.code {
        case KafkaErrorCode.messageTooLarge.rawValue: code = .messageTooLarge
        case KafkaErrorCode.invalidRequest.rawValue: code = .invalidRecord
        default: code = .notLeaderOrFollower
        }
        failed.promise.succeed(.failure(code, error.message))
        guard isCurrent(partition), failed.generation == partition.generation else { return }
        let rest = partition.pending
        partition.pending.removeAll()
        for item in rest { item.promise.succeed(.failure(.notLeaderOrFollower, "an earlier append failed")) }
        partition.pendingResults.removeAll()
        partition.generation &+= 1
        partition.connection = nil
        cache.drop(partition.key)
        if error.code == KafkaErrorCode.fencedLeaderEpoch.rawValue {
            // A newer leader exists; the metadata will move the partition away.
            partition.phase = .resyncing
            return
        }
        partition.phase = .resyncing
        logger.warning("append failed; recovering the append path", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "error": "\(error)"])
        partition.task = Task { await self.resync(partition) }
    }

    // MARK: Reads

    /// The state of a partition led here.
    public func view(_ key: PartitionKey) throws(PartitionUnavailable) -> PartitionView {
        guard let partition = partitions[key] else {
            throw knownState.partition(key) == nil ? .unknown : .notLeader
        }
        guard partition.phase == .ready else { throw .loading }
        return PartitionView(
            topicId: partition.topicId, streamId: partition.streamId, leaderEpoch: partition.epoch,
            highWatermark: partition.highWatermark, logEndOffset: partition.nextOffset, logStartOffset: partition.logStartOffset,
            epochStartOffset: partition.epochStartOffset, walWriter: partition.writer)
    }

    /// Acknowledged batches from the log cache, or nil when the cache does not reach back to `offset`.
    public func cachedRead(_ key: PartitionKey, from offset: Int64, maxBytes: Int, limit: Int64) -> [ByteBuffer]? {
        cache.read(key, from: offset, maxBytes: maxBytes, limit: limit)
    }

    /// Moves the log start offset after DeleteRecords (the metadata follows).
    public func raiseLogStart(_ key: PartitionKey, to offset: Int64) {
        if let partition = partitions[key] { partition.logStartOffset = max(partition.logStartOffset, offset) }
    }

    /// Bytes in the log cache.
    public var cachedBytes: Int { cache.totalBytes }

    /// Number of partitions led here, and how many are ready.
    public var leadership: (led: Int, ready: Int) {
        (partitions.count, partitions.values.filter { $0.phase == .ready }.count)
    }

    /// Waits until any high watermark or leadership changes, or `timeout` passes (Fetch long-poll).
    public func waitForChange(timeout: Duration) async {
        let id = nextWaiter
        nextWaiter &+= 1
        let timer = LoopTimers.after(timeout) { Task { await self.wake(id) } }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            waiters[id] = continuation
        }
        timer.cancel()
    }

    private func wake(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.resume()
    }

    private func wakeWaiters() {
        guard !waiters.isEmpty else { return }
        let all = waiters.values
        waiters.removeAll()
        for continuation in all { continuation.resume() }
    }

    /// Lets go of every partition (shutdown).
    public func resignAll() {
        for partition in partitions.values { resign(partition) }
        partitions.removeAll()
        wakeWaiters()
    }
}
