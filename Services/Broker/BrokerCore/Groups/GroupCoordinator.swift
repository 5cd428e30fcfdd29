import ClusterMetadata
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
    final class Shard {
        let epoch: LeaderEpoch
        var loaded = false
        var groups: [String: ClassicGroup] = [:]

        init(epoch: LeaderEpoch) { self.epoch = epoch }
    }

    /// Where a group's requests go on this broker, or why they cannot be served here.
    enum Owner {
        case shard(Int32, Shard)
        case unavailable(KafkaErrorCode)
    }

    let context: BrokerContext
    let config: GroupConfig
    let logger: Logger
    private var shards: [Int32: Shard] = [:]
    private var loadTasks: [Int32: Task<Void, Never>] = [:]
    private var partitionCount: Int32 = 0
    private var joinWaiters: [UInt64: (partition: Int32, continuation: CheckedContinuation<JoinOutcome, Never>)] = [:]
    private var syncWaiters: [UInt64: (partition: Int32, continuation: CheckedContinuation<SyncOutcome, Never>)] = [:]
    private var nextToken: UInt64 = 1
    private var enqueueTails: [Int32: Task<Void, Never>] = [:]

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
            let shard = Shard(epoch: epoch)
            shards[key.partition] = shard
            loadTasks[key.partition] = Task { await self.load(key, shard: shard, endOffset: endOffset) }
        case .resigned(let key, let epoch):
            guard key.topic == CoordinatorPlacement.offsetsTopic, let shard = shards[key.partition], shard.epoch <= epoch else { return }
            drop(key.partition)
            logger.info("no longer coordinating", metadata: ["partition": "\(key.partition)", "groups": "\(shard.groups.count)"])
        }
    }

    /// Forgets a partition's groups; requests waiting on them are told to find the new coordinator.
    private func drop(_ partition: Int32) {
        loadTasks.removeValue(forKey: partition)?.cancel()
        shards[partition] = nil
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
    private func load(_ key: PartitionKey, shard: Shard, endOffset: Int64) async {
        var replay = GroupReplay()
        var offset: Int64 = -1
        var failures = 0
        let started = ContinuousClock.now
        while shards[key.partition] === shard, !Task.isCancelled {
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
        guard shards[key.partition] === shard, !Task.isCancelled else { return }
        shard.groups = replay.groups(config: config, now: context.now())
        shard.loaded = true
        loadTasks[key.partition] = nil
        logger.info(
            "coordinating", metadata: [
                "partition": "\(key.partition)", "epoch": "\(shard.epoch)", "groups": "\(shard.groups.count)",
                "end_offset": "\(endOffset)", "load_time": "\(ContinuousClock.now - started)",
                "corrupt_records": "\(replay.corruptRecords)",
            ])
    }

    /// Whether this broker coordinates `groupId` now, and where its state lives.
    func owner(_ groupId: String) -> Owner {
        guard partitionCount > 0 else { return .unavailable(.notCoordinator) }
        let partition = CoordinatorPlacement.partition(for: groupId, partitionCount: partitionCount)
        guard let shard = shards[partition] else { return .unavailable(.notCoordinator) }
        guard shard.loaded else { return .unavailable(.coordinatorLoadInProgress) }
        return .shard(partition, shard)
    }

    /// The error for a group request this broker cannot serve now, if any.
    public func availability(of groupId: String) -> KafkaErrorCode {
        if case .unavailable(let code) = owner(groupId) { return code }
        return .none
    }

    // MARK: Time

    func tick() {
        let now = context.now()
        for (partition, shard) in shards where shard.loaded {
            for groupId in Array(shard.groups.keys) {
                guard var group = shard.groups[groupId], let deadline = group.nextDeadline, deadline <= now else { continue }
                let actions = group.tick(now: now)
                shard.groups[groupId] = group
                perform(actions, groupId: groupId, partition: partition, shard: shard)
            }
        }
    }

    /// Deletes offsets past retention (tombstones), and groups left with nothing.
    func expireOffsets() async {
        let now = context.now()
        for (partition, shard) in shards where shard.loaded {
            for groupId in shard.groups.keys.sorted() {
                guard let group = shard.groups[groupId], group.state != .dead else { continue }
                let expired = group.expiredOffsets(now: now)
                let forget = group.state == .empty && group.members.isEmpty && group.pendingMembers.isEmpty && expired.count == group.offsets.count
                if forget && group.offsets.isEmpty && group.protocolType == nil {
                    // Never had members nor offsets: nothing of it was written.
                    shard.groups[groupId] = nil
                    continue
                }
                guard !expired.isEmpty || forget else { continue }
                var records = expired.map { GroupRecord.offset(group: groupId, key: $0, value: nil) }
                if forget { records.append(.metadata(group: groupId, value: nil)) }
                let result = await append(records, partition: partition)
                guard result.errorCode == 0, shards[partition] === shard else { continue }
                for (index, key) in expired.enumerated() {
                    shard.groups[groupId]?.applyOffset(key, nil, position: result.baseOffset + Int64(index))
                }
                if forget, shard.groups[groupId]?.isForgettable == true { shard.groups[groupId] = nil }
                logger.info("expired offsets", metadata: ["group": "\(groupId)", "partitions": "\(expired.count)", "group_removed": "\(forget)"])
            }
        }
    }

    // MARK: Carrying out actions

    private func takeToken() -> UInt64 {
        defer { nextToken &+= 1 }
        return nextToken
    }

    private func perform(_ actions: [GroupAction], groupId: String, partition: Int32, shard: Shard) {
        for action in actions {
            switch action {
            case .joinResponse(let token, let outcome):
                joinWaiters.removeValue(forKey: token)?.continuation.resume(returning: outcome)
            case .syncResponse(let token, let outcome):
                syncWaiters.removeValue(forKey: token)?.continuation.resume(returning: outcome)
            case .store(let reason):
                guard let group = shard.groups[groupId] else { continue }
                let record = GroupRecord.metadata(group: groupId, value: group.metadataValue(now: context.now()))
                Task { await self.store(record, reason: reason, groupId: groupId, partition: partition, shard: shard) }
            }
        }
    }

    private func store(_ record: GroupRecord, reason: StoreReason, groupId: String, partition: Int32, shard: Shard) async {
        let result = await append([record], partition: partition)
        guard shards[partition] === shard, var group = shard.groups[groupId] else { return }
        if result.errorCode != 0 {
            logger.warning("writing group metadata failed", metadata: ["group": "\(groupId)", "error": "\(result.errorCode)"])
        }
        let actions = group.stored(reason, success: result.errorCode == 0, now: context.now())
        shard.groups[groupId] = group
        perform(actions, groupId: groupId, partition: partition, shard: shard)
    }

    /// Appends `records` as one batch to the partition, in call order, and waits until durable.
    private func append(_ records: [GroupRecord], partition: Int32) async -> AppendResult {
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

    // MARK: Membership

    /// JoinGroup: answers when the rebalance completes (or at once for errors and the member-id round).
    public func join(groupId: String, input: JoinInput) async -> JoinOutcome {
        guard !groupId.isEmpty else { return JoinOutcome(error: .invalidGroupId, memberId: input.memberId) }
        guard case .shard(let partition, let shard) = owner(groupId) else {
            if case .unavailable(let code) = owner(groupId) { return JoinOutcome(error: code, memberId: input.memberId) }
            return JoinOutcome(error: .notCoordinator)
        }
        let created = shard.groups[groupId] == nil
        if created {
            guard input.memberId.isEmpty else { return JoinOutcome(error: .unknownMemberId, memberId: input.memberId) }
            shard.groups[groupId] = ClassicGroup(groupId: groupId, config: config, now: context.now())
        }
        let token = takeToken()
        let newMemberId = Self.newMemberId(clientId: input.clientId)
        return await withCheckedContinuation { continuation in
            joinWaiters[token] = (partition, continuation)
            guard var group = shard.groups[groupId] else {
                joinWaiters.removeValue(forKey: token)?.continuation.resume(returning: JoinOutcome(error: .coordinatorNotAvailable))
                return
            }
            let actions = group.join(input, token: token, newMemberId: newMemberId, now: context.now())
            // A refused first join leaves nothing behind, as in Kafka.
            shard.groups[groupId] = created && group.isForgettable ? nil : group
            perform(actions, groupId: groupId, partition: partition, shard: shard)
        }
    }

    /// SyncGroup: members wait for the leader's assignment to be durable.
    public func sync(
        groupId: String, memberId: String, groupInstanceId: String?, generationId: Int32, protocolType: String?, protocolName: String?,
        assignments: [(memberId: String, assignment: ByteBuffer)]
    ) async -> SyncOutcome {
        guard !groupId.isEmpty else { return SyncOutcome(error: .invalidGroupId) }
        let partition: Int32
        let shard: Shard
        switch owner(groupId) {
        case .unavailable(let code): return SyncOutcome(error: code)
        case .shard(let p, let s): (partition, shard) = (p, s)
        }
        guard shard.groups[groupId] != nil else { return SyncOutcome(error: .unknownMemberId) }
        let token = takeToken()
        return await withCheckedContinuation { continuation in
            syncWaiters[token] = (partition, continuation)
            guard var group = shard.groups[groupId] else {
                syncWaiters.removeValue(forKey: token)?.continuation.resume(returning: SyncOutcome(error: .unknownMemberId))
                return
            }
            let actions = group.sync(
                memberId: memberId, groupInstanceId: groupInstanceId, generationId: generationId, protocolType: protocolType,
                protocolName: protocolName, assignments: assignments, token: token, now: context.now())
            shard.groups[groupId] = group
            perform(actions, groupId: groupId, partition: partition, shard: shard)
        }
    }

    /// Heartbeat.
    public func heartbeat(groupId: String, memberId: String, groupInstanceId: String?, generationId: Int32) -> KafkaErrorCode {
        guard !groupId.isEmpty else { return .invalidGroupId }
        switch owner(groupId) {
        case .unavailable(let code): return code
        case .shard(_, let shard):
            guard var group = shard.groups[groupId] else { return .unknownMemberId }
            let code = group.heartbeat(memberId: memberId, groupInstanceId: groupInstanceId, generationId: generationId, now: context.now())
            shard.groups[groupId] = group
            return code
        }
    }

    /// LeaveGroup: a group-level error and one error per leaving member.
    public func leave(groupId: String, members: [(memberId: String, groupInstanceId: String?)]) -> (error: KafkaErrorCode, members: [KafkaErrorCode]) {
        guard !groupId.isEmpty else { return (.invalidGroupId, []) }
        switch owner(groupId) {
        case .unavailable(let code): return (code, [])
        case .shard(let partition, let shard):
            guard var group = shard.groups[groupId] else { return (.none, members.map { _ in .unknownMemberId }) }
            guard group.state != .dead else { return (.coordinatorNotAvailable, []) }
            let (results, actions) = group.leave(members, now: context.now())
            shard.groups[groupId] = group
            perform(actions, groupId: groupId, partition: partition, shard: shard)
            return (.none, results)
        }
    }

    // MARK: Offsets

    /// OffsetCommit of already validated partitions; answers once the records are durable.
    public func commit(
        groupId: String, memberId: String, groupInstanceId: String?, generationId: Int32, offsets: [(OffsetKey, CommittedOffset)]
    ) async -> KafkaErrorCode {
        // Kafka accepts the empty group id here (old tools commit with it).
        let partition: Int32
        let shard: Shard
        switch owner(groupId) {
        case .unavailable(let code): return code
        case .shard(let p, let s): (partition, shard) = (p, s)
        }
        var group = shard.groups[groupId] ?? ClassicGroup(groupId: groupId, config: config, now: context.now())
        if shard.groups[groupId] == nil && generationId >= 0 { return .illegalGeneration }
        if let error = group.validateCommit(memberId: memberId, groupInstanceId: groupInstanceId, generationId: generationId, now: context.now()) {
            if shard.groups[groupId] != nil { shard.groups[groupId] = group }
            return error
        }
        shard.groups[groupId] = group
        guard !offsets.isEmpty else { return .none }
        let records = offsets.map { GroupRecord.offset(group: groupId, key: $0.0, value: $0.1) }
        let result = await append(records, partition: partition)
        let error = Self.commitError(result.errorCode)
        guard error == .none else { return error }
        guard shards[partition] === shard else { return .notCoordinator }
        if shard.groups[groupId] == nil { shard.groups[groupId] = ClassicGroup(groupId: groupId, config: config, now: context.now()) }
        for (index, item) in offsets.enumerated() {
            shard.groups[groupId]?.applyOffset(item.0, item.1, position: result.baseOffset + Int64(index))
        }
        return .none
    }

    /// OffsetFetch: the committed offsets of `partitions` (nil: every committed partition); nil
    /// offset for a partition without a commit.
    public func fetchOffsets(groupId: String, partitions: [OffsetKey]?) -> (error: KafkaErrorCode, offsets: [(OffsetKey, CommittedOffset?)]) {
        switch owner(groupId) {
        case .unavailable(let code): return (code, [])
        case .shard(_, let shard):
            let group = shard.groups[groupId]
            guard let partitions else {
                return (.none, (group?.offsets ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
            }
            return (.none, partitions.map { ($0, group?.offsets[$0]) })
        }
    }

    /// OffsetDelete: a group-level error and one error per partition.
    public func deleteOffsets(groupId: String, partitions: [OffsetKey]) async -> (error: KafkaErrorCode, partitions: [KafkaErrorCode]) {
        let partition: Int32
        let shard: Shard
        switch owner(groupId) {
        case .unavailable(let code): return (code, [])
        case .shard(let p, let s): (partition, shard) = (p, s)
        }
        guard let group = shard.groups[groupId], group.state != .dead else { return (.groupIdNotFound, []) }
        let consumerGroup = group.protocolType == "consumer"
        if group.state != .empty && !consumerGroup { return (.nonEmptyGroup, []) }
        let subscribed = group.state == .empty ? [] : group.subscribedTopics
        var results: [KafkaErrorCode] = []
        var deletions: [OffsetKey] = []
        for key in partitions {
            if subscribed.contains(key.topic) {
                results.append(.groupSubscribedToTopic)
            } else {
                results.append(.none)
                if group.offsets[key] != nil && !deletions.contains(key) { deletions.append(key) }
            }
        }
        guard !deletions.isEmpty else { return (.none, results) }
        let result = await append(deletions.map { GroupRecord.offset(group: groupId, key: $0, value: nil) }, partition: partition)
        let error = Self.commitError(result.errorCode)
        guard error == .none else { return (error, []) }
        guard shards[partition] === shard else { return (.notCoordinator, []) }
        for (index, key) in deletions.enumerated() {
            shard.groups[groupId]?.applyOffset(key, nil, position: result.baseOffset + Int64(index))
        }
        return (.none, results)
    }

    // MARK: Administration

    /// A group as DescribeGroups and ListGroups show it.
    public struct Summary: Sendable, Hashable {
        public struct Member: Sendable, Hashable {
            public var memberId: String
            public var groupInstanceId: String?
            public var clientId: String
            public var clientHost: String
            public var metadata: ByteBuffer
            public var assignment: ByteBuffer
        }

        public var groupId: String
        public var state: GroupState
        public var protocolType: String
        public var protocolName: String
        public var members: [Member]
    }

    static func summary(_ group: ClassicGroup) -> Summary {
        // As Kafka: member metadata, assignment and the protocol only once the group is stable.
        let stable = group.state == .stable
        return Summary(
            groupId: group.groupId, state: group.state, protocolType: group.protocolType ?? "", protocolName: stable ? group.protocolName ?? "" : "",
            members: group.members.map { member in
                Summary.Member(
                    memberId: member.memberId, groupInstanceId: member.groupInstanceId, clientId: member.clientId, clientHost: member.clientHost,
                    metadata: stable ? member.metadata(for: group.protocolName) : ByteBuffer(),
                    assignment: stable ? member.assignment : ByteBuffer())
            })
    }

    /// DescribeGroups of one group: unknown groups are described as Dead, as Kafka does.
    public func describe(groupId: String) -> (error: KafkaErrorCode, summary: Summary?) {
        switch owner(groupId) {
        case .unavailable(let code): return (code, nil)
        case .shard(_, let shard):
            guard let group = shard.groups[groupId] else {
                return (.none, Summary(groupId: groupId, state: .dead, protocolType: "", protocolName: "", members: []))
            }
            return (.none, Self.summary(group))
        }
    }

    /// ListGroups: every group coordinated here, sorted by id; COORDINATOR_LOAD_IN_PROGRESS while a
    /// partition is still loading.
    public func list() -> (error: KafkaErrorCode, groups: [Summary]) {
        var error = KafkaErrorCode.none
        var groups: [Summary] = []
        for shard in shards.values {
            guard shard.loaded else {
                error = .coordinatorLoadInProgress
                continue
            }
            groups += shard.groups.values.filter { $0.state != .dead }.map(Self.summary)
        }
        return (error, groups.sorted { $0.groupId < $1.groupId })
    }

    /// DeleteGroups of one group: only an empty group goes; its offsets and metadata get tombstones.
    public func delete(groupId: String) async -> KafkaErrorCode {
        let partition: Int32
        let shard: Shard
        switch owner(groupId) {
        case .unavailable(let code): return code
        case .shard(let p, let s): (partition, shard) = (p, s)
        }
        guard var group = shard.groups[groupId], group.state != .dead else { return .groupIdNotFound }
        guard group.state == .empty else { return .nonEmptyGroup }
        group.markDead(now: context.now())
        shard.groups[groupId] = group
        let records = group.offsets.keys.sorted().map { GroupRecord.offset(group: groupId, key: $0, value: nil) }
            + [GroupRecord.metadata(group: groupId, value: nil)]
        let result = await append(records, partition: partition)
        if shards[partition] === shard, shard.groups[groupId]?.state == .dead { shard.groups[groupId] = nil }
        return Self.commitError(result.errorCode)
    }
}
