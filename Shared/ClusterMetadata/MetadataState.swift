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
    /// The id the next prepared object gets: every id below it was handed out once.
    public internal(set) var nextObjectId: ObjectID = 1
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

    static func fail(_ code: Int16, _ message: String) -> MetadataResult {
        .error(MetadataError(code, message))
    }

    // MARK: Nodes

    mutating func registerNode(_ registration: NodeRegistration) -> MetadataResult {
        guard registration.id >= 0 else { return Self.fail(MetadataErrorCode.invalidRequest, "negative node id") }
        // Deployment pods take ids from their IP (`--node-id auto`), so a new compactor may get the id of a
        // broker that died on that address, or the reverse. Such a record is taken over once it is fenced and
        // leads nothing; anything else keeps its kind.
        if let existing = nodes[registration.id], existing.kind != registration.kind,
           !(existing.state == .fenced && [.broker, .compactor].contains(existing.kind)
             && [.broker, .compactor].contains(registration.kind) && partitionKeys(ledBy: existing.id).isEmpty)
        {
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

    func checkIncarnation(_ id: NodeID, _ incarnation: Int64) -> MetadataError? {
        guard let node = nodes[id] else {
            return MetadataError(MetadataErrorCode.brokerIdNotRegistered, "node \(id) is not registered")
        }
        guard node.incarnation == incarnation else {
            return MetadataError(
                MetadataErrorCode.staleBrokerEpoch, "node \(id) incarnation \(incarnation) is not current \(node.incarnation)")
        }
        return nil
    }

    mutating func unregisterNode(id: NodeID, incarnation: Int64) -> MetadataResult {
        if let error = checkIncarnation(id, incarnation) { return .error(error) }
        guard let node = nodes.removeValue(forKey: id) else { return .ok }
        for key in reassignments.keys.sorted() where reassignments[key]?.target == id {
            reassignments[key] = nil
        }
        if node.kind == .broker { moveLeadership(awayFrom: id, zone: node.zone) }
        return .ok
    }

    mutating func fenceNode(id: NodeID, incarnation: Int64) -> MetadataResult {
        if let error = checkIncarnation(id, incarnation) { return .error(error) }
        guard let node = nodes[id], node.state == .active else { return .ok }
        nodes[id]?.state = .fenced
        if node.kind == .broker { moveLeadership(awayFrom: id, zone: node.zone) }
        return .ok
    }

    mutating func unfenceNode(id: NodeID, incarnation: Int64) -> MetadataResult {
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

    mutating func moveLeadership(awayFrom broker: NodeID, zone: String) {
        var placement = placement()
        for key in partitionKeys(ledBy: broker) {
            _ = setLeader(key, to: placement.pick(preferringZone: zone))
        }
    }

    mutating func placeLeaderlessPartitions() {
        var placement = placement()
        guard !placement.isEmpty else { return }
        for key in partitionKeys(ledBy: -1) {
            _ = setLeader(key, to: placement.pick(preferringZone: nil))
        }
    }

    /// Makes `leader` the partition's leader with a bumped epoch (stream epoch follows). False when
    /// the epoch cannot grow any more; the partition is then left untouched.
    mutating func setLeader(_ key: PartitionKey, to leader: NodeID) -> Bool {
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
