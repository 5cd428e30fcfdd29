import ClusterMetadata
import EventLoopTimers
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import NIOCore

/// The classic group coordinator of one broker (DESIGN §3): owns the groups whose
/// `__consumer_offsets` partition this broker leads, loads them from the partition when leadership
/// arrives, drops them when it leaves, runs each group's `ClassicGroup` state machine, and makes
/// offset commits and group metadata durable in the partition before acknowledging them.
public actor GroupCoordinator {
    /// The groups of one led `__consumer_offsets` partition.
    final class OffsetsPartition {
        let epoch: LeaderEpoch
        var loaded = false
        /// Classic groups, and the committed offsets of every group.
        var groups: [String: ClassicGroup] = [:]
        /// Consumer-protocol (KIP-848) groups; their offsets are in `groups`.
        var consumerGroups: [String: ConsumerGroup] = [:]

        init(epoch: LeaderEpoch) { self.epoch = epoch }
    }

    /// Where a group's requests go on this broker, or why they cannot be served here.
    enum Owner {
        case hosted(Int32, OffsetsPartition)
        case unavailable(KafkaErrorCode)
    }

    let context: BrokerContext
    let config: GroupConfig
    let logger: Logger
    var offsetsPartitions: [Int32: OffsetsPartition] = [:]
    var loadTasks: [Int32: Task<Void, Never>] = [:]
    var partitionCount: Int32 = 0
    var joinWaiters: [UInt64: (partition: Int32, continuation: CheckedContinuation<JoinOutcome, Never>)] = [:]
    var syncWaiters: [UInt64: (partition: Int32, continuation: CheckedContinuation<SyncOutcome, Never>)] = [:]
    var nextToken: UInt64 = 1
    var enqueueTails: [Int32: Task<Void, Never>] = [:]
    /// The consumer protocol's view of the topics, rebuilt when the metadata version moves.
    var catalogCache: TopicCatalog?

    /// How often sessions and rebalance deadlines are checked.
    static let tickInterval: Duration = .milliseconds(100)
    /// Bytes read per step while loading a partition.
    static let loadChunkBytes = 1 << 20

    public init(context: BrokerContext, config: GroupConfig = GroupConfig()) {
        self.context = context
        self.config = config
        self.logger = context.logger
    }

    /// Follows this broker's leadership of `__consumer_offsets` partitions and expires sessions until cancelled.
    public func run() async {
        let events = await context.replicas.leadershipEvents()
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await event in events { await self.handle(event) }
            }
            tasks.addTask {
                while !Task.isCancelled {
                    do { try await LoopTimers.sleep(for: Self.tickInterval) } catch { return }
                    await self.tick()
                }
            }
            let interval = Duration.milliseconds(max(config.offsetsRetentionCheckIntervalMs, 1_000))
            tasks.addTask {
                while !Task.isCancelled {
                    do { try await LoopTimers.sleep(for: interval) } catch { return }
                    await self.expireOffsets()
                }
            }
            await tasks.waitForAll()
        }
        for task in loadTasks.values { task.cancel() }
    }

    // MARK: Leadership

    func handle(_ event: LeadershipEvent) async {
        switch event {
        case .ready(let key, let epoch, let endOffset):
            guard key.topic == CoordinatorPlacement.offsetsTopic else { return }
            if let topic = await context.metadata.state.topics[CoordinatorPlacement.offsetsTopic] {
                partitionCount = Int32(clamping: topic.partitions.count)
            }
            drop(key.partition)
            let hosted = OffsetsPartition(epoch: epoch)
            offsetsPartitions[key.partition] = hosted
            loadTasks[key.partition] = Task { await self.load(key, hosted: hosted, endOffset: endOffset) }
        case .resigned(let key, let epoch):
            guard key.topic == CoordinatorPlacement.offsetsTopic, let hosted = offsetsPartitions[key.partition], hosted.epoch <= epoch else { return }
            drop(key.partition)
            logger.info("no longer coordinating", metadata: ["partition": "\(key.partition)", "groups": "\(hosted.groups.count)"])
        }
    }

    /// Forgets a partition's groups; requests waiting on them are told to find the new coordinator.
    func drop(_ partition: Int32) {
        loadTasks.removeValue(forKey: partition)?.cancel()
        offsetsPartitions[partition] = nil
        for (token, waiter) in joinWaiters where waiter.partition == partition {
            joinWaiters[token] = nil
            waiter.continuation.resume(returning: JoinOutcome(error: .notCoordinator))
        }
        for (token, waiter) in syncWaiters where waiter.partition == partition {
            syncWaiters[token] = nil
            waiter.continuation.resume(returning: SyncOutcome(error: .notCoordinator))
        }
    }

    /// Reads the partition from its log start to `endOffset` and rebuilds its groups, then serves them.
    func load(_ key: PartitionKey, hosted: OffsetsPartition, endOffset: Int64) async {
        var replay = GroupReplay()
        var offset: Int64 = -1
        var failures = 0
        let started = ContinuousClock.now
        while offsetsPartitions[key.partition] === hosted, !Task.isCancelled {
            do {
                let view = try await context.replicas.view(key)
                offset = max(offset, view.logStartOffset)
                guard offset < endOffset else { break }
                let bytes = try await PartitionReads.read(key, view: view, from: offset, maxBytes: Self.loadChunkBytes, context: context)
                var iterator = RecordSetIterator(bytes)
                var progressed = false
                while let batch = try iterator.next() {
                    guard batch.nextOffset > offset else { continue }
                    replay.apply(batch: batch)
                    offset = batch.nextOffset
                    progressed = true
                }
                if progressed {
                    failures = 0
                    continue
                }
                failures += 1
                logger.warning("no progress loading group records", metadata: ["partition": "\(key.partition)", "offset": "\(offset)"])
            } catch let error as PartitionUnavailable {
                if case .notLeader = error { return }
                failures += 1
            } catch {
                failures += 1
                logger.warning("loading group records failed; retrying", metadata: ["partition": "\(key.partition)", "error": "\(error)"])
            }
            do { try await LoopTimers.sleep(for: .milliseconds(min(50 * failures, 1000))) } catch { return }
        }
        guard offsetsPartitions[key.partition] === hosted, !Task.isCancelled else { return }
        hosted.groups = replay.groups(config: config, now: context.now())
        hosted.consumerGroups = replay.consumerGroups(config: config, now: context.now())
        hosted.loaded = true
        loadTasks[key.partition] = nil
        logger.info(
            "coordinating", metadata: [
                "partition": "\(key.partition)", "epoch": "\(hosted.epoch)", "groups": "\(hosted.groups.count)",
                "end_offset": "\(endOffset)", "load_time": "\(ContinuousClock.now - started)",
                "corrupt_records": "\(replay.corruptRecords)",
            ])
    }

    /// Whether this broker coordinates `groupId` now, and where its state lives.
    func owner(_ groupId: String) -> Owner {
        guard partitionCount > 0 else { return .unavailable(.notCoordinator) }
        let partition = CoordinatorPlacement.partition(for: groupId, partitionCount: partitionCount)
        guard let hosted = offsetsPartitions[partition] else { return .unavailable(.notCoordinator) }
        guard hosted.loaded else { return .unavailable(.coordinatorLoadInProgress) }
        return .hosted(partition, hosted)
    }

    /// The error for a group request this broker cannot serve now, if any.
    public func availability(of groupId: String) -> KafkaErrorCode {
        if case .unavailable(let code) = owner(groupId) { return code }
        return .none
    }

    // MARK: Time

    func tick() {
        let now = context.now()
        for (partition, hosted) in offsetsPartitions where hosted.loaded {
            for groupId in Array(hosted.groups.keys) {
                guard var group = hosted.groups[groupId], let deadline = group.nextDeadline, deadline <= now else { continue }
                let actions = group.tick(now: now)
                hosted.groups[groupId] = group
                perform(actions, groupId: groupId, partition: partition, hosted: hosted)
            }
            expireConsumerMembers(now: now, partition: partition, hosted: hosted)
        }
    }

    /// Deletes offsets past retention (tombstones), and groups left with nothing.
    func expireOffsets() async {
        let now = context.now()
        for (partition, hosted) in offsetsPartitions where hosted.loaded {
            for groupId in hosted.groups.keys.sorted() {
                guard let group = hosted.groups[groupId], group.state != .dead else { continue }
                // A consumer-protocol group with members keeps its offsets, as in Kafka.
                if let consumer = hosted.consumerGroups[groupId], !consumer.members.isEmpty { continue }
                let expired = group.expiredOffsets(now: now)
                let forget = group.state == .empty && group.members.isEmpty && group.pendingMembers.isEmpty && expired.count == group.offsets.count
                if forget && group.offsets.isEmpty && group.protocolType == nil && hosted.consumerGroups[groupId] == nil {
                    // Never had members nor offsets: nothing of it was written.
                    hosted.groups[groupId] = nil
                    continue
                }
                guard !expired.isEmpty || forget else { continue }
                var records = expired.map { GroupRecord.offset(group: groupId, key: $0, value: nil) }
                if forget { records.append(.metadata(group: groupId, value: nil)) }
                if forget, hosted.consumerGroups[groupId] != nil { records.append(.consumerGroup(group: groupId, value: nil)) }
                let result = await append(records, partition: partition)
                guard result.errorCode == 0, offsetsPartitions[partition] === hosted else { continue }
                for (index, key) in expired.enumerated() {
                    hosted.groups[groupId]?.applyOffset(key, nil, position: result.baseOffset + Int64(index))
                }
                if forget, hosted.groups[groupId]?.isForgettable == true {
                    hosted.groups[groupId] = nil
                    if hosted.consumerGroups[groupId]?.members.isEmpty == true { hosted.consumerGroups[groupId] = nil }
                }
                logger.info("expired offsets", metadata: ["group": "\(groupId)", "partitions": "\(expired.count)", "group_removed": "\(forget)"])
            }
        }
    }

    // MARK: Carrying out actions

    func takeToken() -> UInt64 {
        defer { nextToken &+= 1 }
        return nextToken
    }

    func perform(_ actions: [GroupAction], groupId: String, partition: Int32, hosted: OffsetsPartition) {
        for action in actions {
            switch action {
            case .joinResponse(let token, let outcome):
                joinWaiters.removeValue(forKey: token)?.continuation.resume(returning: outcome)
            case .syncResponse(let token, let outcome):
                syncWaiters.removeValue(forKey: token)?.continuation.resume(returning: outcome)
            case .store(let reason):
                guard let group = hosted.groups[groupId] else { continue }
                let record = GroupRecord.metadata(group: groupId, value: group.metadataValue(now: context.now()))
                Task { await self.store(record, reason: reason, groupId: groupId, partition: partition, hosted: hosted) }
            }
        }
    }

    func store(_ record: GroupRecord, reason: StoreReason, groupId: String, partition: Int32, hosted: OffsetsPartition) async {
        let result = await append([record], partition: partition)
        guard offsetsPartitions[partition] === hosted, var group = hosted.groups[groupId] else { return }
        if result.errorCode != 0 {
            logger.warning("writing group metadata failed", metadata: ["group": "\(groupId)", "error": "\(result.errorCode)"])
        }
        let actions = group.stored(reason, success: result.errorCode == 0, now: context.now())
        hosted.groups[groupId] = group
        perform(actions, groupId: groupId, partition: partition, hosted: hosted)
    }

    /// Appends `records` as one batch to the partition, in call order, and waits until durable.
    func append(_ records: [GroupRecord], partition: Int32) async -> AppendResult {
        let batch: RecordBatch
        do {
            batch = try GroupRecord.batch(records, now: context.now())
        } catch {
            return .failure(.unknownServerError, "\(error)")
        }
        let entry = ReplicaManager.Append(
            key: PartitionKey(topic: CoordinatorPlacement.offsetsTopic, partition: partition), records: batch.bytes,
            batches: [(start: 0, count: Int64(records.count))], logAppendTime: nil)
        // Records of one key must land in the log in the order their requests were handled here.
        let previous = enqueueTails[partition]
        let replicas = context.replicas
        let enqueued = Task { () -> EventLoopFuture<AppendResult>? in
            await previous?.value
            return await replicas.enqueue([entry]).first
        }
        enqueueTails[partition] = Task { _ = await enqueued.value }
        guard let future = await enqueued.value else { return .failure(.unknownServerError) }
        do {
            return try await future.get()
        } catch {
            return .failure(.unknownServerError, "\(error)")
        }
    }

    /// Kafka's mapping of a failed `__consumer_offsets` append to the group error clients handle.
    static func commitError(_ code: Int16) -> KafkaErrorCode {
        switch KafkaErrorCode(rawValue: code) {
        case .none?: .none
        case .notLeaderOrFollower?, .kafkaStorageError?: .notCoordinator
        case .messageTooLarge?, .recordListTooLarge?, .invalidFetchSize?: .invalidCommitOffsetSize
        default: .coordinatorNotAvailable
        }
    }

    /// A member id for a new member: the client id (shortened) and random hex, as Kafka makes them.
    static func newMemberId(clientId: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        let hex = String(high, radix: 16) + String(low, radix: 16)
        return "\(clientId.prefix(128))-\(hex)"
    }
}
