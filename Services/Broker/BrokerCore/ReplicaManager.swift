import ClusterMetadata
import ControllerClient
import EventLoopTimers
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The partitions this broker leads: the driver of `PartitionLeadership`. It carries out the state
/// machine's actions (take-overs and resyncs as tasks, in `StreamTakeOver.swift`; answers to
/// producers; the log cache of acknowledged batches; wake-ups of waiting fetches), stamps offsets into
/// record sets, checks idempotent producers, and sends appends to the WAL writer in offset order.
public actor ReplicaManager {
    /// The manager's code runs on its event loop, so a request handler already there (one loop per broker
    /// by default) queues a produce without a task, and WAL answers are applied without one.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { eventLoop.executor.asUnownedSerialExecutor() }

    /// The I/O side of one lease: its take-over or resync task, its append path, its producers, and
    /// the appends on their way to the WAL writer.
    final class Partition {
        struct Waiting {
            var promise: EventLoopPromise<AppendResult>
            var bytes: ByteBuffer
            var logAppendTime: Int64
        }

        let lease: PartitionLeadership.Lease
        var key: PartitionKey { lease.key }
        var streamId: StreamID { lease.streamId }
        var epoch: LeaderEpoch { lease.epoch }
        var task: Task<Void, Never>?
        var writer: NodeID = -1
        var connection: KafkaConnection?
        var producers = ProducerStateTable()
        /// When expired producers were last forgotten (broker wall clock, ms).
        var producersSweptAt: Int64 = 0
        /// Appends not yet answered, by number.
        var appends: [UInt64: Waiting] = [:]

        init(lease: PartitionLeadership.Lease) {
            self.lease = lease
        }
    }

    let nodeId: NodeID
    let zone: String
    let wal: WALClient
    let committed: any CommittedDataReader
    /// Set in WAL-bypass mode: appends go straight into committed objects.
    let bypass: WALBypassAppender?
    let metadata: any MetadataSource
    let writer: any MetadataWriter
    let logger: Logger
    public nonisolated let eventLoop: any EventLoop
    /// Kafka's `producer.id.expiration.ms`: idempotent producers silent this long are forgotten.
    let producerIdExpirationMs: Int64
    /// Broker wall clock in ms (the broker's one clock, `BrokerContext.now`).
    let now: @Sendable () -> Int64
    /// Which partitions are led here, and the order of their appends.
    var leaderState: PartitionLeadership
    /// The I/O side of each led partition's current lease.
    private var partitions: [PartitionKey: Partition] = [:]
    private var cache: LogCache
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextWaiter: UInt64 = 0
    /// High watermark and leadership changes so far (see `waitForChange`).
    private var changes: UInt64 = 0
    var knownState = MetadataState() {
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
        writer: any MetadataWriter, logCacheBytes: Int, bypass: WALBypassAppender? = nil,
        producerIdExpirationMs: Int64 = 86_400_000, now: @escaping @Sendable () -> Int64,
        logger: Logger
    ) {
        self.producerIdExpirationMs = producerIdExpirationMs
        self.now = now
        self.committed = committed
        self.bypass = bypass
        self.nodeId = nodeId
        self.zone = zone
        self.wal = wal
        self.metadata = metadata
        self.writer = writer
        self.logger = logger
        self.cache = LogCache(capacity: logCacheBytes)
        self.leaderState = PartitionLeadership(nodeId: nodeId)
        self.eventLoop = MultiThreadedEventLoopGroup.singleton.any()
    }

    // MARK: Leadership

    /// Brings the led partitions in line with a new metadata image: takes over partitions newly led
    /// here (or led again under a newer epoch) and lets go of the others.
    public func apply(_ state: MetadataState) {
        knownState = state
        perform(leaderState.apply(state))
        // Reads of partitions led from other zones end where the committed data ends, which moves with the image.
        if wakesReadersOnEveryImage { wakeWaiters() }
    }

    /// Whether every new metadata image ends Fetch long-polls (zone routing serves committed data that moves with it).
    public private(set) var wakesReadersOnEveryImage = false

    public func wakeReadersOnEveryImage(_ on: Bool) {
        wakesReadersOnEveryImage = on
    }

    /// Carries out the state machine's actions, in order.
    func perform(_ actions: [PartitionLeadership.Action]) {
        for action in actions {
            switch action {
            case .takeOver(let lease):
                let partition = Partition(lease: lease)
                partitions[lease.key] = partition
                partition.task = Task { await self.takeOver(partition) }
            case .resigned(let lease, let failed):
                guard let partition = partitions[lease.key], partition.lease == lease else { continue }
                partitions[lease.key] = nil
                publish(.resigned(lease.key, epoch: lease.epoch))
                partition.task?.cancel()
                // Appends already sent may still become durable; their producers retry against the new leader.
                for number in failed { partition.appends.removeValue(forKey: number)?.promise.succeed(.failure(.notLeaderOrFollower, "leadership moved")) }
                for waiting in partition.appends.values { waiting.promise.succeed(.failure(.notLeaderOrFollower, "leadership moved")) }
                partition.appends.removeAll()
                cache.drop(lease.key)
                logger.info("no longer leading", metadata: ["partition": "\(lease.key.topic)-\(lease.key.partition)", "epoch": "\(lease.epoch)"])
            case .ready(let lease, let end):
                cache.drop(lease.key)
                publish(.ready(lease.key, epoch: lease.epoch, endOffset: end))
                logger.info(
                    "leading", metadata: [
                        "partition": "\(lease.key.topic)-\(lease.key.partition)", "epoch": "\(lease.epoch)",
                        "end_offset": "\(end)", "wal_writer": "\(partitions[lease.key]?.writer ?? -1)",
                    ])
            case .acknowledge(let lease, let number, let base, let next):
                guard let partition = partitions[lease.key], partition.lease == lease,
                      let waiting = partition.appends.removeValue(forKey: number) else { continue }
                cache.append(lease.key, baseOffset: base, nextOffset: next, bytes: waiting.bytes)
                let logStart = leaderState.partition(lease.key)?.logStartOffset ?? -1
                waiting.promise.succeed(AppendResult(errorCode: 0, baseOffset: base, logAppendTime: waiting.logAppendTime, logStartOffset: logStart))
            case .fail(let lease, let number, let code, let message):
                guard let partition = partitions[lease.key], partition.lease == lease,
                      let waiting = partition.appends.removeValue(forKey: number) else { continue }
                waiting.promise.succeed(AppendResult(errorCode: code, errorMessage: message))
            case .resync(let lease, let fenced):
                guard let partition = partitions[lease.key], partition.lease == lease else { continue }
                partition.connection = nil
                cache.drop(lease.key)
                // When fenced a newer leader exists; the metadata will move the partition away.
                guard !fenced else { continue }
                logger.warning("append failed; recovering the append path", metadata: ["partition": "\(lease.key.topic)-\(lease.key.partition)"])
                partition.task = Task { await self.resync(partition) }
            case .wakeReaders:
                wakeWaiters()
            }
        }
    }

    /// Leadership changes from now on, starting with a `.ready` for every partition already led and ready.
    public func leadershipEvents() -> AsyncStream<LeadershipEvent> {
        let (stream, continuation) = AsyncStream<LeadershipEvent>.makeStream()
        let id = nextSubscriber
        nextSubscriber &+= 1
        subscribers[id] = continuation
        for partition in leaderState.led.values.sorted(by: { $0.lease.key < $1.lease.key }) where partition.phase == .ready {
            continuation.yield(.ready(partition.lease.key, epoch: partition.lease.epoch, endOffset: partition.highWatermark))
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

    func isCurrent(_ partition: Partition) -> Bool {
        partitions[partition.key] === partition
    }

    /// The take-over of `partition` is done: it appends through `writer` (`connection`) from `end` on.
    func becomeReady(
        _ partition: Partition, writer: NodeID, connection: KafkaConnection?, end: Int64, logStart: Int64, producers: ProducerStateTable
    ) {
        partition.producers = producers
        partition.writer = writer
        partition.connection = connection
        perform(leaderState.becameReady(partition.lease, end: end, logStart: logStart))
    }

    // MARK: Produce

    /// Assigns offsets to `appends` and queues them at the WAL writer, in order, before returning;
    /// each future completes once its append is durable (or failed).
    public func enqueue(_ appends: [Append]) -> [EventLoopFuture<AppendResult>] {
        appends.map { enqueueOne($0) }
    }

    private func enqueueOne(_ append: Append) -> EventLoopFuture<AppendResult> {
        let slot: (lease: PartitionLeadership.Lease, baseOffset: Int64, number: UInt64)
        do {
            slot = try leaderState.nextAppend(append.key)
        } catch .notLed {
            let code: KafkaErrorCode = knownState.partition(append.key) == nil ? .unknownTopicOrPartition : .notLeaderOrFollower
            return eventLoop.makeSucceededFuture(.failure(code))
        } catch {
            return eventLoop.makeSucceededFuture(.failure(.notLeaderOrFollower, "partition is being taken over"))
        }
        guard let partition = partitions[append.key], partition.lease == slot.lease, bypass != nil || partition.connection != nil else {
            return eventLoop.makeSucceededFuture(.failure(.notLeaderOrFollower, "partition is being taken over"))
        }
        let logStartOffset = leaderState.partition(append.key)?.logStartOffset ?? -1
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
            let answer = AppendResult(errorCode: 0, baseOffset: original.baseOffset, logAppendTime: -1, logStartOffset: logStartOffset)
            guard let pending = partition.appends[original.append] else { return eventLoop.makeSucceededFuture(answer) }
            // The original is still on its way to disk: answer as it is answered.
            return pending.promise.futureResult.map { $0.errorCode == 0 ? answer : $0 }
        }
        if verdicts.contains(where: { if case .duplicate = $0 { true } else { false } }) {
            return eventLoop.makeSucceededFuture(.failure(.outOfOrderSequenceNumber, "a retried batch must be sent alone"))
        }
        // A copy of its own: the request's bytes are a slice of the whole request frame, which the
        // log cache would otherwise keep alive (and undercount) for as long as it holds the batch.
        var records = ByteBufferAllocator().buffer(capacity: append.records.readableBytes)
        records.writeImmutableBuffer(append.records)
        let base = slot.baseOffset
        var next = base
        let number = slot.number
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
        let lease = slot.lease
        let generation: UInt64
        do {
            let assigned = try leaderState.assign(lease, count: next - base)
            assert(assigned.number == number && assigned.baseOffset == base, "offsets assigned differently than foreseen")
            generation = assigned.generation
        } catch {
            return eventLoop.makeSucceededFuture(.failure(.notLeaderOrFollower, "partition is being taken over"))
        }
        let promise = eventLoop.makePromise(of: AppendResult.self)
        partition.appends[number] = Partition.Waiting(promise: promise, bytes: records, logAppendTime: append.logAppendTime ?? -1)
        let future: EventLoopFuture<WALCallError?>
        if let bypass {
            future = bypass.enqueue(stream: partition.streamId, epoch: partition.epoch, baseOffset: base, lastOffset: next - 1, batches: records)
        } else if let connection = partition.connection {
            do {
                future = try wal.enqueueAppend(
                    on: connection, stream: partition.streamId, epoch: partition.epoch, baseOffset: base, lastOffset: next - 1, batches: records
                )
            } catch {
                future = eventLoop.makeSucceededFuture(WALCallError(code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "\(error)"))
            }
        } else {
            future = eventLoop.makeSucceededFuture(WALCallError(code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "no append path"))
        }
        for entry in recorded { partition.producers.record(id: entry.id, epoch: entry.epoch, batch: entry.batch, now: wallNow) }
        // Applied on this actor's loop straight from the WAL answer's callback: no task per append.
        future.hop(to: eventLoop).whenComplete { result in
            let failure: PartitionLeadership.AppendFailure?
            switch result {
            case .success(let error): failure = error.map { .init(code: $0.code, message: $0.message) }
            case .failure(let error):
                failure = .init(code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "WAL writer connection: \(error)")
            }
            self.assumeIsolated { manager in
                manager.perform(manager.leaderState.answered(lease, generation: generation, baseOffset: base, failure: failure))
            }
        }
        return promise.futureResult
    }

    // MARK: Reads

    /// The state of a partition led here.
    public func view(_ key: PartitionKey) throws(PartitionUnavailable) -> PartitionView {
        guard let partition = leaderState.partition(key) else {
            throw knownState.partition(key) == nil ? .unknown : .notLeader
        }
        guard partition.phase == .ready else { throw .loading }
        return PartitionView(
            topicId: partition.lease.topicId, streamId: partition.lease.streamId, leaderEpoch: partition.lease.epoch,
            highWatermark: partition.highWatermark, logEndOffset: partition.nextOffset, logStartOffset: partition.logStartOffset,
            epochStartOffset: partition.epochStartOffset, walWriter: partitions[key]?.writer ?? -1)
    }

    /// Acknowledged batches from the log cache, or nil when the cache does not reach back to `offset`.
    public func cachedRead(_ key: PartitionKey, from offset: Int64, maxBytes: Int, limit: Int64) -> [ByteBuffer]? {
        cache.read(key, from: offset, maxBytes: maxBytes, limit: limit)
    }

    /// Moves the log start offset after DeleteRecords (the metadata follows).
    public func raiseLogStart(_ key: PartitionKey, to offset: Int64) {
        leaderState.raiseLogStart(key, to: offset)
    }

    /// Bytes in the log cache.
    public var cachedBytes: Int { cache.totalBytes }

    /// Number of partitions led here, and how many are ready.
    public var leadership: (led: Int, ready: Int) { leaderState.counts }

    /// Counts high watermark and leadership changes. A fetch reads it before a pass over its
    /// partitions and waits with it, so a change that lands during the pass ends the wait at once
    /// instead of being missed until `max_wait_ms`.
    public var changeCount: UInt64 { changes }

    /// Waits until a high watermark or leadership changes after `seen` (a `changeCount`), or
    /// `timeout` passes (Fetch long-poll); returns the count then, at once if it has moved already.
    public func waitForChange(after seen: UInt64, timeout: Duration) async -> UInt64 {
        guard changes == seen else { return changes }
        let id = nextWaiter
        nextWaiter &+= 1
        let timer = LoopTimers.after(timeout) { Task { await self.wake(id) } }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            waiters[id] = continuation
        }
        timer.cancel()
        return changes
    }

    /// Fetches waiting in `waitForChange` (tests wait for a long-poll to be parked).
    var waitingReaders: Int { waiters.count }

    private func wake(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.resume()
    }

    func wakeWaiters() {
        changes &+= 1
        guard !waiters.isEmpty else { return }
        let all = waiters.values
        waiters.removeAll()
        for continuation in all { continuation.resume() }
    }

    /// Lets go of every partition (shutdown).
    public func resignAll() {
        perform(leaderState.resignAll())
    }
}
