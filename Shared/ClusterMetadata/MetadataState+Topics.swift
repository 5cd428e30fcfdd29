import KafkaProtocol

/// Topics, partitions and reassignments: the commands that create, grow, configure and delete
/// topics and move partition leadership.
extension MetadataState {
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

    func validatePartitionGrowth(_ count: Int32) -> MetadataError? {
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

    mutating func createTopic(_ spec: TopicSpec) -> ItemResult {
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

    mutating func addPartitions(topic name: String, count: Int) {
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

    mutating func deleteTopic(_ name: String, now: Millis) -> ItemResult {
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

    mutating func createPartitions(_ change: PartitionCountChange) -> ItemResult {
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

    mutating func alterConfigs(topic: String, configs: [String: String]) -> MetadataResult {
        guard topics[topic] != nil else { return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown topic \(topic)") }
        for key in configs.keys.sorted() {
            if let error = TopicConfig.validate(key: key, value: configs[key] ?? "") { return .error(error) }
        }
        topics[topic]?.configs = configs
        return .ok
    }

    mutating func incrementalAlterConfigs(topic: String, operations: [ConfigOperation]) -> MetadataResult {
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

    func partitionExists(_ key: PartitionKey) -> Bool {
        guard let topic = topics[key.topic] else { return false }
        return key.partition >= 0 && Int(key.partition) < topic.partitions.count
    }

    mutating func moveLeader(topic: String, partition: Int32, to target: NodeID) -> MetadataResult {
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

    mutating func alterReassignment(_ request: ReassignmentRequest) -> ItemResult {
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
}

extension TopicConfig {
    /// Kafka's default of a list config, the base APPEND and SUBTRACT work on when unset.
    static func listDefault(_ key: String) -> String {
        key == "cleanup.policy" ? "delete" : ""
    }
}
