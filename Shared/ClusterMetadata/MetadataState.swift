import KafkaProtocol

/// Identifies one partition of a topic by name.
public struct PartitionKey: Sendable, Hashable, Comparable {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public static func < (lhs: PartitionKey, rhs: PartitionKey) -> Bool {
        (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition)
    }
}

/// The cluster metadata every controller replica and follower service holds, driven only by
/// `apply`. Pure and deterministic: no clocks, no randomness, and every walk over a dictionary
/// goes through sorted keys, so equal command sequences give equal states and equal snapshots.
///
/// Leader moves on fencing/unregistration and placement of leaderless partitions happen inside
/// `apply` (deterministically), so the controller leader only proposes the fact (node fenced);
/// explicit moves (`moveLeader`) come from reassignment and balancing decisions.
public struct MetadataState: Sendable, Equatable {
    /// Producer ids handed out per AllocateProducerIds.
    public static let producerIdBlockSize: Int32 = 1000
    /// Upper bound on a topic's partitions, so one command cannot allocate without limit.
    public static let maxPartitionsPerTopic: Int32 = 100_000
    /// Upper bound on all partitions of the cluster.
    public static let maxTotalPartitions = 1_000_000
    /// Identified writes remembered for deduplication. A retry arrives within seconds of its first
    /// attempt; this many writes span minutes at the cluster's usual write rate.
    public static let rememberedWriteLimit = 10_000

    /// Raft index of the last applied command: the metadata version followers poll against.
    public internal(set) var lastAppliedIndex: UInt64 = 0
    /// Raft term of the last applied command.
    public internal(set) var lastAppliedTerm: UInt64 = 0
    /// Registered nodes by id.
    public internal(set) var nodes: [NodeID: NodeRecord] = [:]
    /// Topics by name.
    public internal(set) var topics: [String: TopicRecord] = [:]
    /// Streams by id (one per partition).
    public internal(set) var streams: [StreamID: StreamRecord] = [:]
    /// Objects that are prepared, committed, or destroyed but not yet physically deleted.
    public internal(set) var objects: [ObjectID: ObjectRecord] = [:]
    /// Pending reassignments.
    public internal(set) var reassignments: [PartitionKey: PendingReassignment] = [:]
    /// Results of the latest identified writes (at most `rememberedWriteLimit`), so a retried write is applied once.
    public internal(set) var rememberedWrites = RememberedWrites()
    var nextIncarnation: Int64 = 1
    var nextStreamId: StreamID = 1
    var nextObjectId: ObjectID = 1
    /// The first producer id of the next block.
    public internal(set) var nextProducerId: Int64 = 0

    // Derived from the fields above (rebuilt when a snapshot is loaded).
    var topicNamesById: [KafkaUUID: String] = [:]
    var topicNamesByCollisionKey: [String: String] = [:]
    /// Per stream, committed objects' ranges ending above the stream's start, in offset order.
    var streamObjects: [StreamID: [ObjectLocation]] = [:]

    /// An empty cluster.
    public init() {}

    // MARK: - Apply

    /// Applies one committed log entry. An entry whose write id is remembered changes nothing but the
    /// applied index and term, and returns the result and index of the write's first application, so a
    /// client retrying a write whose answer it lost gets the answer it lost.
    public mutating func apply(_ entry: MetadataLogEntry, index: UInt64, term: UInt64 = 0) -> AppliedWrite {
        guard let writeId = entry.writeId, index > lastAppliedIndex else {
            return AppliedWrite(result: apply(entry.command, index: index, term: term), index: index)
        }
        if let earlier = rememberedWrites[writeId] {
            lastAppliedIndex = index
            lastAppliedTerm = term
            return earlier
        }
        let applied = AppliedWrite(result: apply(entry.command, index: index, term: term), index: index)
        // Rejections are remembered too: the retry must not succeed where the first attempt failed, nor the reverse.
        rememberedWrites.remember(writeId, applied, limit: Self.rememberedWriteLimit)
        return applied
    }

    /// Applies one committed command. Never throws or traps: an invalid command yields an error
    /// result and changes nothing except the applied index/term.
    public mutating func apply(_ command: MetadataCommand, index: UInt64, term: UInt64 = 0) -> MetadataResult {
        guard index > lastAppliedIndex else {
            return .error(MetadataError(
                MetadataErrorCode.invalidRequest, "index \(index) is not after last applied \(lastAppliedIndex)"))
        }
        let result: MetadataResult
        switch command {
        case .registerNode(let registration): result = registerNode(registration)
        case .unregisterNode(let id, let incarnation): result = unregisterNode(id: id, incarnation: incarnation)
        case .fenceNode(let id, let incarnation): result = fenceNode(id: id, incarnation: incarnation)
        case .unfenceNode(let id, let incarnation): result = unfenceNode(id: id, incarnation: incarnation)
        case .createTopics(let specs): result = .items(specs.map { createTopic($0) })
        case .deleteTopics(let names, let now): result = .items(names.map { deleteTopic($0, now: now) })
        case .createPartitions(let changes): result = .items(changes.map { createPartitions($0) })
        case .alterTopicConfigs(let topic, let configs): result = alterConfigs(topic: topic, configs: configs)
        case .incrementalAlterTopicConfigs(let topic, let operations):
            result = incrementalAlterConfigs(topic: topic, operations: operations)
        case .moveLeader(let topic, let partition, let to): result = moveLeader(topic: topic, partition: partition, to: to)
        case .alterReassignments(let requests): result = .items(requests.map { alterReassignment($0) })
        case .setStreamWriter(let streamId, let epoch, let writer):
            result = setStreamWriter(streamId: streamId, epoch: epoch, writer: writer)
        case .trimStream(let streamId, let newStart, let now): result = trimStream(streamId, newStart: newStart, now: now)
        case .prepareObject(let kind, let deadline): result = prepareObject(kind: kind, deadline: deadline)
        case .commitObject(let commit, let sources, let now):
            result = sources.isEmpty ? commitAppend(commit, now: now) : commitCompaction([commit], sources: sources, now: now)
        case .commitCompaction(let outputs, let sources, let now):
            result = commitCompaction(outputs, sources: sources, now: now)
        case .expirePrepared(let now): result = expirePrepared(now: now)
        case .releaseObjects(let ids, let now): result = releaseObjects(ids, now: now)
        case .objectsDeleted(let ids): result = objectsDeleted(ids)
        case .allocateProducerIds(let brokerId, let incarnation): result = allocateProducerIds(brokerId, incarnation)
        }
        lastAppliedIndex = index
        lastAppliedTerm = term
        return result
    }

    private static func fail(_ code: Int16, _ message: String) -> MetadataResult {
        .error(MetadataError(code, message))
    }

    // MARK: Nodes

    private mutating func registerNode(_ registration: NodeRegistration) -> MetadataResult {
        guard registration.id >= 0 else { return Self.fail(MetadataErrorCode.invalidRequest, "negative node id") }
        if let existing = nodes[registration.id], existing.kind != registration.kind {
            return Self.fail(
                MetadataErrorCode.invalidRequest,
                "node \(registration.id) is registered as \(existing.kind), not \(registration.kind)")
        }
        guard nextIncarnation < Int64.max else { return Self.fail(MetadataErrorCode.unknownServerError, "incarnations exhausted") }
        let incarnation = nextIncarnation
        nextIncarnation += 1
        let previous = nodes[registration.id]
        nodes[registration.id] = NodeRecord(registration: registration, incarnation: incarnation, state: .active)
        if registration.kind == .broker {
            if previous != nil {
                // A new incarnation has none of the old process's in-memory state: bump the epochs it
                // leads so the new process goes through the fence-and-recover hand-off.
                for key in partitionKeys(ledBy: registration.id) { _ = setLeader(key, to: registration.id) }
            }
            placeLeaderlessPartitions()
        }
        return .nodeRegistered(incarnation: incarnation)
    }

    private func checkIncarnation(_ id: NodeID, _ incarnation: Int64) -> MetadataError? {
        guard let node = nodes[id] else {
            return MetadataError(MetadataErrorCode.brokerIdNotRegistered, "node \(id) is not registered")
        }
        guard node.incarnation == incarnation else {
            return MetadataError(
                MetadataErrorCode.staleBrokerEpoch, "node \(id) incarnation \(incarnation) is not current \(node.incarnation)")
        }
        return nil
    }

    private mutating func unregisterNode(id: NodeID, incarnation: Int64) -> MetadataResult {
        if let error = checkIncarnation(id, incarnation) { return .error(error) }
        guard let node = nodes.removeValue(forKey: id) else { return .ok }
        for key in reassignments.keys.sorted() where reassignments[key]?.target == id {
            reassignments[key] = nil
        }
        if node.kind == .broker { moveLeadership(awayFrom: id, zone: node.zone) }
        return .ok
    }

    private mutating func fenceNode(id: NodeID, incarnation: Int64) -> MetadataResult {
        if let error = checkIncarnation(id, incarnation) { return .error(error) }
        guard let node = nodes[id], node.state == .active else { return .ok }
        nodes[id]?.state = .fenced
        if node.kind == .broker { moveLeadership(awayFrom: id, zone: node.zone) }
        return .ok
    }

    private mutating func unfenceNode(id: NodeID, incarnation: Int64) -> MetadataResult {
        if let error = checkIncarnation(id, incarnation) { return .error(error) }
        guard let node = nodes[id], node.state == .fenced else { return .ok }
        nodes[id]?.state = .active
        // Only leaderless partitions come back; moving led partitions is a balancing decision the
        // leader proposes explicitly, because every move costs the partition a short write pause.
        if node.kind == .broker { placeLeaderlessPartitions() }
        return .ok
    }

    // MARK: Placement

    /// Led-partition counts of active brokers, for balancing by broker and by zone.
    struct Placement {
        var led: [NodeID: Int] = [:]
        var zoneLed: [String: Int] = [:]
        var zoneOf: [NodeID: String] = [:]
        var brokers: [NodeID] = []

        var isEmpty: Bool { brokers.isEmpty }

        /// The least loaded broker (same zone first when `zone` has one), ties by zone load then id.
        mutating func pick(preferringZone zone: String?) -> NodeID {
            var candidates = brokers
            if let zone {
                let local = brokers.filter { zoneOf[$0] == zone }
                if !local.isEmpty { candidates = local }
            }
            var best: NodeID = -1
            var bestKey = (Int.max, Int.max, NodeID.max)
            for id in candidates {
                let key = (led[id] ?? 0, zoneLed[zoneOf[id] ?? ""] ?? 0, id)
                if key < bestKey {
                    bestKey = key
                    best = id
                }
            }
            if best >= 0 {
                led[best, default: 0] += 1
                zoneLed[zoneOf[best] ?? "", default: 0] += 1
            }
            return best
        }
    }

    func placement() -> Placement {
        var placement = Placement()
        for id in nodes.keys.sorted() {
            guard let node = nodes[id], node.kind == .broker, node.state == .active else { continue }
            placement.brokers.append(id)
            placement.zoneOf[id] = node.zone
            placement.led[id] = 0
        }
        for topic in topics.values {
            for partition in topic.partitions {
                guard let zone = placement.zoneOf[partition.leader] else { continue }
                placement.led[partition.leader, default: 0] += 1
                placement.zoneLed[zone, default: 0] += 1
            }
        }
        return placement
    }

    /// Partitions led by `broker`, in (topic, partition) order.
    public func partitionKeys(ledBy broker: NodeID) -> [PartitionKey] {
        var keys: [PartitionKey] = []
        for name in topics.keys.sorted() {
            guard let topic = topics[name] else { continue }
            for (index, partition) in topic.partitions.enumerated() where partition.leader == broker {
                keys.append(PartitionKey(topic: name, partition: Int32(index)))
            }
        }
        return keys
    }

    private mutating func moveLeadership(awayFrom broker: NodeID, zone: String) {
        var placement = placement()
        for key in partitionKeys(ledBy: broker) {
            _ = setLeader(key, to: placement.pick(preferringZone: zone))
        }
    }

    private mutating func placeLeaderlessPartitions() {
        var placement = placement()
        guard !placement.isEmpty else { return }
        for key in partitionKeys(ledBy: -1) {
            _ = setLeader(key, to: placement.pick(preferringZone: nil))
        }
    }

    /// Makes `leader` the partition's leader with a bumped epoch (stream epoch follows). False when
    /// the epoch cannot grow any more; the partition is then left untouched.
    private mutating func setLeader(_ key: PartitionKey, to leader: NodeID) -> Bool {
        let index = Int(key.partition)
        // Only the partition is copied out: holding the whole topic would make the write below copy
        // its partition array, turning a broker's fencing quadratic in partition count.
        guard let partition = partition(key), partition.leaderEpoch < LeaderEpoch.max else { return false }
        let epoch = partition.leaderEpoch + 1
        topics[key.topic]?.partitions[index].leader = leader
        topics[key.topic]?.partitions[index].leaderEpoch = epoch
        streams[partition.streamId]?.epoch = epoch
        if let pending = reassignments[key], pending.target == leader { reassignments[key] = nil }
        return true
    }

    // MARK: Topics

    /// Kafka's topic name rule: 1-249 of [a-zA-Z0-9._-], not "." or "..".
    public static func validateTopicName(_ name: String) -> MetadataError? {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= 249, name != ".", name != ".." else {
            return MetadataError(MetadataErrorCode.invalidTopicException, "invalid topic name length or value")
        }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                continue
            default:
                return MetadataError(MetadataErrorCode.invalidTopicException, "topic name has characters outside [a-zA-Z0-9._-]")
            }
        }
        return nil
    }

    /// Kafka refuses names equal up to '.' versus '_' because they collide in metric names.
    static func collisionKey(_ name: String) -> String {
        String(name.map { $0 == "." ? "_" : $0 })
    }

    private func validatePartitionGrowth(_ count: Int32) -> MetadataError? {
        guard count <= Self.maxPartitionsPerTopic else {
            return MetadataError(MetadataErrorCode.invalidPartitions, "more than \(Self.maxPartitionsPerTopic) partitions")
        }
        guard streams.count + Int(count) <= Self.maxTotalPartitions else {
            return MetadataError(MetadataErrorCode.invalidPartitions, "cluster limit of \(Self.maxTotalPartitions) partitions")
        }
        guard nextStreamId <= StreamID.max - StreamID(count) else {
            return MetadataError(MetadataErrorCode.unknownServerError, "stream ids exhausted")
        }
        return nil
    }

    private mutating func createTopic(_ spec: TopicSpec) -> ItemResult {
        if let error = Self.validateTopicName(spec.name) { return ItemResult(name: spec.name, error: error) }
        guard topics[spec.name] == nil else {
            return ItemResult(name: spec.name, errorCode: MetadataErrorCode.topicAlreadyExists, message: "topic exists")
        }
        if let other = topicNamesByCollisionKey[Self.collisionKey(spec.name)] {
            return ItemResult(
                name: spec.name, errorCode: MetadataErrorCode.invalidTopicException, message: "collides with topic \(other)")
        }
        guard spec.topicId != .zero, topicNamesById[spec.topicId] == nil else {
            return ItemResult(name: spec.name, errorCode: MetadataErrorCode.invalidRequest, message: "topic id zero or in use")
        }
        guard spec.partitionCount > 0 else {
            return ItemResult(name: spec.name, errorCode: MetadataErrorCode.invalidPartitions, message: "partition count must be positive")
        }
        if let error = validatePartitionGrowth(spec.partitionCount) { return ItemResult(name: spec.name, error: error) }
        guard spec.replicationFactor == -1 || spec.replicationFactor > 0 else {
            return ItemResult(
                name: spec.name, errorCode: MetadataErrorCode.invalidReplicationFactor, message: "replication factor must be -1 or positive")
        }
        for key in spec.configs.keys.sorted() {
            if let error = TopicConfig.validate(key: key, value: spec.configs[key] ?? "") {
                return ItemResult(name: spec.name, error: error)
            }
        }
        topics[spec.name] = TopicRecord(
            name: spec.name, topicId: spec.topicId, isInternal: spec.isInternal, configs: spec.configs, partitions: [])
        topicNamesById[spec.topicId] = spec.name
        topicNamesByCollisionKey[Self.collisionKey(spec.name)] = spec.name
        addPartitions(topic: spec.name, count: Int(spec.partitionCount))
        return ItemResult(name: spec.name)
    }

    private mutating func addPartitions(topic name: String, count: Int) {
        guard let topic = topics[name] else { return }
        var placement = placement()
        var partitions = topic.partitions
        partitions.reserveCapacity(partitions.count + count)
        for _ in 0..<count {
            let streamId = nextStreamId
            nextStreamId += 1
            let leader = placement.pick(preferringZone: nil)
            partitions.append(PartitionRecord(leader: leader, leaderEpoch: 0, streamId: streamId))
            streams[streamId] = StreamRecord(
                id: streamId, topicId: topic.topicId, partition: Int32(partitions.count - 1), epoch: 0,
                startOffset: 0, requestedStart: 0, committedEnd: 0, walWriter: -1)
        }
        topics[name]?.partitions = partitions
    }

    private mutating func deleteTopic(_ name: String, now: Millis) -> ItemResult {
        guard let topic = topics.removeValue(forKey: name) else {
            return ItemResult(name: name, errorCode: MetadataErrorCode.unknownTopicOrPartition, message: "unknown topic")
        }
        topicNamesById[topic.topicId] = nil
        topicNamesByCollisionKey[Self.collisionKey(name)] = nil
        for key in reassignments.keys.sorted() where key.topic == name { reassignments[key] = nil }
        var affected: Set<ObjectID> = []
        for partition in topic.partitions {
            streams[partition.streamId] = nil
            for location in streamObjects.removeValue(forKey: partition.streamId) ?? [] {
                affected.insert(location.objectId)
            }
        }
        destroyUnreachable(affected, now: now)
        return ItemResult(name: name)
    }

    private mutating func createPartitions(_ change: PartitionCountChange) -> ItemResult {
        guard let topic = topics[change.topic] else {
            return ItemResult(name: change.topic, errorCode: MetadataErrorCode.unknownTopicOrPartition, message: "unknown topic")
        }
        let current = Int32(topic.partitions.count)
        guard change.count > current else {
            return ItemResult(
                name: change.topic, errorCode: MetadataErrorCode.invalidPartitions,
                message: "topic has \(current) partitions; the count can only grow")
        }
        if let error = validatePartitionGrowth(change.count) { return ItemResult(name: change.topic, error: error) }
        if let error = validatePartitionGrowth(change.count - current) { return ItemResult(name: change.topic, error: error) }
        addPartitions(topic: change.topic, count: Int(change.count - current))
        return ItemResult(name: change.topic)
    }

    private mutating func alterConfigs(topic: String, configs: [String: String]) -> MetadataResult {
        guard topics[topic] != nil else { return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown topic \(topic)") }
        for key in configs.keys.sorted() {
            if let error = TopicConfig.validate(key: key, value: configs[key] ?? "") { return .error(error) }
        }
        topics[topic]?.configs = configs
        return .ok
    }

    private mutating func incrementalAlterConfigs(topic: String, operations: [ConfigOperation]) -> MetadataResult {
        guard var configs = topics[topic]?.configs else {
            return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown topic \(topic)")
        }
        var seen: Set<String> = []
        for operation in operations {
            guard seen.insert(operation.key).inserted else {
                return Self.fail(MetadataErrorCode.invalidRequest, "duplicate config key \(operation.key)")
            }
            guard TopicConfig.isKnown(operation.key) else {
                return Self.fail(MetadataErrorCode.invalidConfig, "unknown topic config \(operation.key)")
            }
            switch operation.operation {
            case .set:
                guard let value = operation.value else {
                    return Self.fail(MetadataErrorCode.invalidRequest, "SET of \(operation.key) without a value")
                }
                configs[operation.key] = value
            case .delete:
                configs[operation.key] = nil
            case .append, .subtract:
                guard TopicConfig.isList(operation.key) else {
                    return Self.fail(MetadataErrorCode.invalidRequest, "\(operation.key) is not a list config")
                }
                let current = TopicConfig.listItems(configs[operation.key] ?? TopicConfig.listDefault(operation.key))
                let items = TopicConfig.listItems(operation.value ?? "")
                let updated: [String]
                if operation.operation == .append {
                    updated = current + items.filter { !current.contains($0) }
                } else {
                    updated = current.filter { !items.contains($0) }
                }
                configs[operation.key] = updated.joined(separator: ",")
            }
            if let value = configs[operation.key], let error = TopicConfig.validate(key: operation.key, value: value) {
                return .error(error)
            }
        }
        topics[topic]?.configs = configs
        return .ok
    }

    // MARK: Partitions and reassignments

    private func partitionExists(_ key: PartitionKey) -> Bool {
        guard let topic = topics[key.topic] else { return false }
        return key.partition >= 0 && Int(key.partition) < topic.partitions.count
    }

    private mutating func moveLeader(topic: String, partition: Int32, to target: NodeID) -> MetadataResult {
        let key = PartitionKey(topic: topic, partition: partition)
        guard partitionExists(key), let current = self.partition(key) else {
            return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown partition \(topic)-\(partition)")
        }
        guard let node = nodes[target], node.kind == .broker, node.state == .active else {
            return Self.fail(MetadataErrorCode.brokerNotAvailable, "node \(target) is not an active broker")
        }
        if current.leader == target {
            if reassignments[key]?.target == target { reassignments[key] = nil }
            return .ok
        }
        guard setLeader(key, to: target) else {
            return Self.fail(MetadataErrorCode.unknownServerError, "leader epoch of \(topic)-\(partition) exhausted")
        }
        return .ok
    }

    private mutating func alterReassignment(_ request: ReassignmentRequest) -> ItemResult {
        let key = PartitionKey(topic: request.topic, partition: request.partition)
        func result(_ code: Int16, _ message: String? = nil) -> ItemResult {
            ItemResult(name: request.topic, partition: request.partition, errorCode: code, message: message)
        }
        guard partitionExists(key), let current = partition(key) else {
            return result(MetadataErrorCode.unknownTopicOrPartition, "unknown partition")
        }
        guard let replicas = request.replicas else {
            guard reassignments.removeValue(forKey: key) != nil else {
                return result(MetadataErrorCode.noReassignmentInProgress, "no reassignment in progress")
            }
            return result(0)
        }
        guard let target = replicas.first, Set(replicas).count == replicas.count else {
            return result(MetadataErrorCode.invalidReplicaAssignment, "replica list empty or has duplicates")
        }
        for replica in replicas {
            guard let node = nodes[replica], node.kind == .broker else {
                return result(MetadataErrorCode.invalidReplicaAssignment, "broker \(replica) is not registered")
            }
        }
        if current.leader == target {
            reassignments[key] = nil
        } else {
            reassignments[key] = PendingReassignment(topic: request.topic, partition: request.partition, replicas: replicas)
        }
        return result(0)
    }

    // MARK: Streams

    private func checkStreamEpoch(_ stream: StreamRecord, _ epoch: LeaderEpoch) -> MetadataError? {
        if epoch < stream.epoch {
            return MetadataError(MetadataErrorCode.fencedLeaderEpoch, "stream \(stream.id) epoch \(epoch) < \(stream.epoch)")
        }
        if epoch > stream.epoch {
            return MetadataError(MetadataErrorCode.unknownLeaderEpoch, "stream \(stream.id) epoch \(epoch) > \(stream.epoch)")
        }
        return nil
    }

    private mutating func setStreamWriter(streamId: StreamID, epoch: LeaderEpoch, writer: NodeID) -> MetadataResult {
        guard let stream = streams[streamId] else {
            return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(streamId)")
        }
        if let error = checkStreamEpoch(stream, epoch) { return .error(error) }
        if writer != -1 {
            guard let node = nodes[writer], node.kind == .walWriter, node.state == .active else {
                return Self.fail(MetadataErrorCode.brokerNotAvailable, "node \(writer) is not an active WAL writer")
            }
        }
        streams[streamId]?.walWriter = writer
        return .ok
    }

    /// Retention/DeleteRecords. The start offset only moves forward and never past the committed
    /// end; a DeleteRecords offset beyond it (tail still in the WAL, already checked against the
    /// high watermark by the partition leader) is kept as `requestedStart`, shown to clients as the
    /// log start offset at once, and the start offset catches up as commits advance the end.
    private mutating func trimStream(_ streamId: StreamID, newStart: Int64, now: Millis) -> MetadataResult {
        guard let stream = streams[streamId] else {
            return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(streamId)")
        }
        guard newStart >= 0 else { return Self.fail(MetadataErrorCode.offsetOutOfRange, "negative start offset") }
        guard newStart > stream.logStartOffset else { return .ok }
        streams[streamId]?.requestedStart = newStart
        advanceStart(streamId, now: now)
        return .ok
    }

    /// Moves the start offset toward `requestedStart` as far as the committed end allows, dropping
    /// index entries that fall below it and destroying objects nothing reaches any more.
    private mutating func advanceStart(_ streamId: StreamID, now: Millis) {
        guard let stream = streams[streamId] else { return }
        let start = min(stream.requestedStart, stream.committedEnd)
        guard start > stream.startOffset else { return }
        streams[streamId]?.startOffset = start
        guard let locations = streamObjects[streamId] else { return }
        let dropped = locations.filter { $0.endOffset <= start }
        guard !dropped.isEmpty else { return }
        setLocations(streamId, locations.filter { $0.endOffset > start })
        destroyUnreachable(Set(dropped.map(\.objectId)), now: now)
    }

    // MARK: Objects

    private mutating func prepareObject(kind: ObjectKind, deadline: Millis) -> MetadataResult {
        guard nextObjectId < ObjectID.max else { return Self.fail(MetadataErrorCode.unknownServerError, "object ids exhausted") }
        let id = nextObjectId
        nextObjectId += 1
        objects[id] = ObjectRecord(
            id: id, kind: kind, state: .prepared, deadline: deadline, size: 0, ranges: [], committedAt: 0, destroyedAt: 0)
        return .objectPrepared(id)
    }

    /// Whether any range of a committed object is still reachable from a live stream.
    private func isReachable(_ object: ObjectRecord) -> Bool {
        object.ranges.contains { range in
            guard let stream = streams[range.streamId] else { return false }
            return range.endOffset > stream.startOffset
        }
    }

    private mutating func destroyUnreachable(_ ids: Set<ObjectID>, now: Millis) {
        for id in ids.sorted() {
            guard let object = objects[id], object.state == .committed, !isReachable(object) else { continue }
            destroy(id, now: now)
        }
    }

    /// Empty lists are dropped so equal states compare equal however they were reached.
    private mutating func setLocations(_ streamId: StreamID, _ locations: [ObjectLocation]) {
        streamObjects[streamId] = locations.isEmpty ? nil : locations
    }

    private mutating func destroy(_ id: ObjectID, now: Millis) {
        guard let object = objects[id] else { return }
        objects[id]?.state = .destroyed
        objects[id]?.destroyedAt = now
        for streamId in Set(object.ranges.map(\.streamId)).sorted() {
            streamObjects[streamId]?.removeAll { $0.objectId == id }
            if streamObjects[streamId]?.isEmpty == true { streamObjects[streamId] = nil }
        }
    }

    /// Checks that `commit` may turn a prepared object into a committed one.
    private func checkCommittable(_ commit: ObjectCommit, now: Millis) -> MetadataError? {
        guard let object = objects[commit.objectId] else {
            return MetadataError(MetadataErrorCode.invalidRequest, "unknown object \(commit.objectId)")
        }
        switch object.state {
        case .prepared: break
        case .committed: return MetadataError(MetadataErrorCode.invalidRequest, "object \(commit.objectId) already committed")
        case .destroyed: return MetadataError(MetadataErrorCode.requestTimedOut, "object \(commit.objectId) expired or destroyed")
        }
        guard now < object.deadline else {
            return MetadataError(MetadataErrorCode.requestTimedOut, "object \(commit.objectId) is past its deadline")
        }
        guard object.kind != .routed else {
            return MetadataError(MetadataErrorCode.invalidRequest, "routed objects carry no stream ranges")
        }
        guard commit.size >= 0, !commit.ranges.isEmpty else {
            return MetadataError(MetadataErrorCode.invalidRequest, "object \(commit.objectId) has no ranges or a negative size")
        }
        if object.kind == .stream, Set(commit.ranges.map(\.streamId)).count != 1 {
            return MetadataError(MetadataErrorCode.invalidRequest, "a stream object holds exactly one stream")
        }
        for range in commit.ranges where range.startOffset < 0 || range.endOffset <= range.startOffset {
            return MetadataError(MetadataErrorCode.invalidRequest, "empty or negative range in object \(commit.objectId)")
        }
        return nil
    }

    private mutating func record(_ commit: ObjectCommit, now: Millis) {
        objects[commit.objectId]?.state = .committed
        objects[commit.objectId]?.size = commit.size
        objects[commit.objectId]?.ranges = commit.ranges
        objects[commit.objectId]?.committedAt = now
        for range in commit.ranges {
            streamObjects[range.streamId, default: []].append(
                ObjectLocation(objectId: commit.objectId, startOffset: range.startOffset, endOffset: range.endOffset))
        }
    }

    private mutating func commitAppend(_ commit: ObjectCommit, now: Millis) -> MetadataResult {
        // A retried commit whose first answer was lost (the object may since have been compacted
        // away): only committed objects carry ranges, so matching ranges mean it already happened.
        if let object = objects[commit.objectId], object.state != .prepared, !object.ranges.isEmpty,
            object.size == commit.size, object.ranges == commit.ranges
        {
            return .ok
        }
        if let error = checkCommittable(commit, now: now) { return .error(error) }
        var ends: [StreamID: Int64] = [:]
        for range in commit.ranges {
            guard let stream = streams[range.streamId] else {
                return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(range.streamId)")
            }
            if let error = checkStreamEpoch(stream, range.epoch) { return .error(error) }
            let expected = ends[range.streamId] ?? stream.committedEnd
            guard range.startOffset == expected else {
                return Self.fail(
                    MetadataErrorCode.offsetOutOfRange,
                    "stream \(range.streamId) range starts at \(range.startOffset), committed end is \(expected)")
            }
            ends[range.streamId] = range.endOffset
        }
        record(commit, now: now)
        for streamId in ends.keys.sorted() {
            streams[streamId]?.committedEnd = ends[streamId] ?? 0
            advanceStart(streamId, now: now)
        }
        return .ok
    }

    /// Sorted, merged [start, end) intervals.
    static func union(_ intervals: [(Int64, Int64)]) -> [(Int64, Int64)] {
        var merged: [(Int64, Int64)] = []
        for interval in intervals.sorted(by: { $0 < $1 }) {
            if let last = merged.last, interval.0 <= last.1 {
                merged[merged.count - 1].1 = max(last.1, interval.1)
            } else {
                merged.append(interval)
            }
        }
        return merged
    }

    /// Whether every interval of `inner` lies inside one interval of the merged `outer`.
    static func covers(_ outer: [(Int64, Int64)], _ inner: [(Int64, Int64)]) -> Bool {
        inner.allSatisfy { piece in outer.contains { $0.0 <= piece.0 && piece.1 <= $0.1 } }
    }

    /// A compaction: outputs replace sources in one step. Outputs may only hold offsets the sources
    /// held, and must hold every offset of the sources that is still reachable, so no reader loses
    /// data; the sources become destroyed.
    private mutating func commitCompaction(_ outputs: [ObjectCommit], sources: [ObjectID], now: Millis) -> MetadataResult {
        guard !sources.isEmpty, Set(sources).count == sources.count else {
            return Self.fail(MetadataErrorCode.invalidRequest, "compaction needs distinct sources")
        }
        guard Set(outputs.map(\.objectId)).count == outputs.count else {
            return Self.fail(MetadataErrorCode.invalidRequest, "duplicate compaction output")
        }
        var sourceIntervals: [StreamID: [(Int64, Int64)]] = [:]
        for id in sources {
            guard let object = objects[id], object.state == .committed else {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction source \(id) is not a committed object")
            }
            for range in object.ranges { sourceIntervals[range.streamId, default: []].append((range.startOffset, range.endOffset)) }
        }
        var outputIntervals: [StreamID: [(Int64, Int64)]] = [:]
        for output in outputs {
            if let error = checkCommittable(output, now: now) { return .error(error) }
            for range in output.ranges { outputIntervals[range.streamId, default: []].append((range.startOffset, range.endOffset)) }
        }
        for streamId in outputIntervals.keys.sorted() {
            let pieces = (outputIntervals[streamId] ?? []).sorted(by: { $0 < $1 })
            guard streams[streamId] != nil else {
                return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(streamId)")
            }
            for (previous, next) in zip(pieces, pieces.dropFirst()) where next.0 < previous.1 {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction outputs overlap on stream \(streamId)")
            }
            guard Self.covers(Self.union(sourceIntervals[streamId] ?? []), pieces) else {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction output holds offsets its sources do not on stream \(streamId)")
            }
        }
        for streamId in sourceIntervals.keys.sorted() {
            guard let stream = streams[streamId] else { continue }
            let reachable = Self.union(sourceIntervals[streamId] ?? []).compactMap { interval -> (Int64, Int64)? in
                let start = max(interval.0, stream.startOffset)
                return start < interval.1 ? (start, interval.1) : nil
            }
            guard Self.covers(Self.union(outputIntervals[streamId] ?? []), reachable) else {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction would drop reachable offsets of stream \(streamId)")
            }
        }
        for id in sources { destroy(id, now: now) }
        for output in outputs { record(output, now: now) }
        for streamId in outputIntervals.keys.sorted() {
            streamObjects[streamId]?.sort { ($0.startOffset, $0.endOffset, $0.objectId) < ($1.startOffset, $1.endOffset, $1.objectId) }
        }
        for streamId in outputIntervals.keys.sorted() {
            guard let start = streams[streamId]?.startOffset, let locations = streamObjects[streamId] else { continue }
            setLocations(streamId, locations.filter { $0.endOffset > start })
        }
        destroyUnreachable(Set(outputs.map(\.objectId)), now: now)
        return .ok
    }

    private mutating func expirePrepared(now: Millis) -> MetadataResult {
        var expired: [ObjectID] = []
        for id in objects.keys.sorted() {
            guard let object = objects[id], object.state == .prepared, object.deadline <= now else { continue }
            destroy(id, now: now)
            expired.append(id)
        }
        return .objectsExpired(expired)
    }

    /// Destroys prepared objects before their deadline (claimed routed objects, abandoned uploads).
    private mutating func releaseObjects(_ ids: [ObjectID], now: Millis) -> MetadataResult {
        for id in ids {
            guard let object = objects[id], object.state != .committed else {
                return Self.fail(MetadataErrorCode.invalidRequest, "object \(id) is unknown or committed")
            }
        }
        for id in ids where objects[id]?.state == .prepared { destroy(id, now: now) }
        return .ok
    }

    private mutating func objectsDeleted(_ ids: [ObjectID]) -> MetadataResult {
        for id in ids {
            if let object = objects[id], object.state != .destroyed {
                return Self.fail(MetadataErrorCode.invalidRequest, "object \(id) is \(object.state), not destroyed")
            }
        }
        // Unknown ids were already forgotten by an earlier (retried) command.
        for id in ids { objects[id] = nil }
        return .ok
    }

    // MARK: Producer ids

    private mutating func allocateProducerIds(_ brokerId: NodeID, _ incarnation: Int64) -> MetadataResult {
        guard let node = nodes[brokerId], node.kind == .broker else {
            return Self.fail(MetadataErrorCode.brokerIdNotRegistered, "broker \(brokerId) is not registered")
        }
        guard node.incarnation == incarnation else {
            return Self.fail(MetadataErrorCode.staleBrokerEpoch, "broker \(brokerId) incarnation \(incarnation) is stale")
        }
        let first = nextProducerId
        guard first <= Int64.max - Int64(Self.producerIdBlockSize) else {
            return Self.fail(MetadataErrorCode.unknownServerError, "producer ids exhausted")
        }
        nextProducerId += Int64(Self.producerIdBlockSize)
        return .producerIds(firstId: first, count: Self.producerIdBlockSize)
    }

    // MARK: - Queries

    /// The topic with this id.
    public func topic(id: KafkaUUID) -> TopicRecord? {
        topicNamesById[id].flatMap { topics[$0] }
    }

    /// Topic names in sorted order.
    public var topicNames: [String] { topics.keys.sorted() }

    /// One partition, or nil when unknown.
    public func partition(_ key: PartitionKey) -> PartitionRecord? {
        guard let topic = topics[key.topic], key.partition >= 0, Int(key.partition) < topic.partitions.count else { return nil }
        return topic.partitions[Int(key.partition)]
    }

    /// Registered nodes in id order.
    public var sortedNodes: [NodeRecord] { nodes.keys.sorted().compactMap { nodes[$0] } }

    /// Active brokers in id order.
    public var activeBrokers: [NodeRecord] { sortedNodes.filter { $0.kind == .broker && $0.state == .active } }

    /// Pending reassignments in (topic, partition) order (ListPartitionReassignments).
    public var pendingReassignments: [PendingReassignment] {
        reassignments.keys.sorted().compactMap { reassignments[$0] }
    }

    /// Committed objects holding a stream's data from `offset` on, in offset order: what a broker
    /// reads to serve committed data. Empty when the offset is at or past the committed end.
    public func objects(covering streamId: StreamID, from offset: Int64) -> [ObjectLocation] {
        (streamObjects[streamId] ?? []).filter { $0.endOffset > offset }
    }

    /// Destroyed objects whose grace period has passed, oldest first: due for physical deletion.
    public func objectsDueForDeletion(now: Millis, gracePeriod: Millis) -> [ObjectID] {
        let (limit, overflow) = now.subtractingReportingOverflow(gracePeriod)
        return objects.values
            .filter { $0.state == .destroyed && !overflow && $0.destroyedAt <= limit }
            .sorted { ($0.destroyedAt, $0.id) < ($1.destroyedAt, $1.id) }
            .map(\.id)
    }

    /// Objects in a state, in id order.
    public func objects(in state: ObjectState) -> [ObjectRecord] {
        objects.keys.sorted().compactMap { objects[$0] }.filter { $0.state == state }
    }
}

extension TopicConfig {
    /// Kafka's default of a list config, the base APPEND and SUBTRACT work on when unset.
    static func listDefault(_ key: String) -> String {
        key == "cleanup.policy" ? "delete" : ""
    }
}
