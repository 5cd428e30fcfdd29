import KafkaProtocol
import NIOCore

/// Snapshot encoding: every field of the state in sorted key order, so equal states give equal
/// bytes. Derived indexes are not stored; they are rebuilt on load.
extension MetadataState {
    /// Encodes the whole state: format byte, counters, then nodes, topics, streams, objects and
    /// reassignments, each sorted by key, then remembered writes (if any) in apply order.
    public func encodeSnapshot() -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 256 + 32 * streams.count + 48 * objects.count)
        buffer.writeInteger(metadataFormatVersion)
        buffer.writeKafkaInteger(lastAppliedIndex)
        buffer.writeKafkaInteger(lastAppliedTerm)
        buffer.writeVarlong(nextIncarnation)
        buffer.writeVarlong(nextStreamId)
        buffer.writeVarlong(nextObjectId)
        buffer.writeVarlong(nextProducerId)

        buffer.writeMetaCount(nodes.count)
        for node in sortedNodes {
            buffer.writeRegistration(node.registration)
            buffer.writeVarlong(node.incarnation)
            buffer.writeInteger(node.state.rawValue)
        }

        buffer.writeMetaCount(topics.count)
        for name in topicNames {
            guard let topic = topics[name] else { continue }
            buffer.writeMetaString(topic.name)
            buffer.writeKafkaUUID(topic.topicId)
            buffer.writeKafkaBool(topic.isInternal)
            buffer.writeStringMap(topic.configs)
            buffer.writeMetaCount(topic.partitions.count)
            for partition in topic.partitions {
                buffer.writeVarint(partition.leader)
                buffer.writeVarint(partition.leaderEpoch)
                buffer.writeVarlong(partition.streamId)
            }
        }

        buffer.writeMetaCount(streams.count)
        for id in streams.keys.sorted() {
            guard let stream = streams[id] else { continue }
            buffer.writeVarlong(stream.id)
            buffer.writeKafkaUUID(stream.topicId)
            buffer.writeVarint(stream.partition)
            buffer.writeVarint(stream.epoch)
            buffer.writeVarlong(stream.startOffset)
            buffer.writeVarlong(stream.requestedStart)
            buffer.writeVarlong(stream.committedEnd)
            buffer.writeVarint(stream.walWriter)
        }

        buffer.writeMetaCount(objects.count)
        for id in objects.keys.sorted() {
            guard let object = objects[id] else { continue }
            buffer.writeVarlong(object.id)
            buffer.writeInteger(object.kind.rawValue)
            buffer.writeInteger(object.state.rawValue)
            buffer.writeVarlong(object.deadline)
            buffer.writeVarlong(object.size)
            buffer.writeRanges(object.ranges)
            buffer.writeVarlong(object.committedAt)
            buffer.writeVarlong(object.destroyedAt)
        }

        buffer.writeMetaCount(reassignments.count)
        for pending in pendingReassignments {
            buffer.writeMetaString(pending.topic)
            buffer.writeVarint(pending.partition)
            buffer.writeNodeIDs(pending.replicas)
        }

        // Remembered writes come last and only when there are any, so states without them encode as
        // before and older snapshots (which end here) still load.
        if !rememberedWrites.isEmpty {
            buffer.writeMetaCount(rememberedWrites.count)
            for (id, write) in rememberedWrites.inApplyOrder {
                buffer.writeKafkaUUID(id)
                buffer.writeKafkaInteger(write.index)
                let result = write.result.encode()
                buffer.writeMetaCount(result.readableBytes)
                buffer.writeImmutableBuffer(result)
            }
        }
        return buffer
    }

    /// Loads a snapshot, checking that it is internally consistent. Never traps on bad input.
    public init(snapshot: ByteBuffer) throws(ProtocolError) {
        self.init()
        var buffer = snapshot
        let version: UInt8 = try buffer.readKafkaInteger()
        guard version == metadataFormatVersion else { throw .invalid("unknown metadata snapshot format \(version)") }
        lastAppliedIndex = try buffer.readKafkaInteger()
        lastAppliedTerm = try buffer.readKafkaInteger()
        nextIncarnation = try buffer.readVarlong()
        nextStreamId = try buffer.readVarlong()
        nextObjectId = try buffer.readVarlong()
        nextProducerId = try buffer.readVarlong()
        guard nextIncarnation >= 1, nextStreamId >= 1, nextObjectId >= 1, nextProducerId >= 0 else {
            throw .invalid("snapshot counters out of range")
        }

        for _ in 0..<(try buffer.readMetaCount(minimumSize: 7)) {
            let registration = try buffer.readRegistration()
            let incarnation = try buffer.readVarlong()
            let state = try buffer.readMetaEnum(NodeState.self)
            guard registration.id >= 0, incarnation >= 1, incarnation < nextIncarnation else {
                throw .invalid("snapshot node \(registration.id) is inconsistent")
            }
            guard nodes.updateValue(
                NodeRecord(registration: registration, incarnation: incarnation, state: state), forKey: registration.id) == nil
            else { throw .invalid("duplicate node \(registration.id)") }
        }

        for _ in 0..<(try buffer.readMetaCount(minimumSize: 20)) {
            let name = try buffer.readMetaString()
            let topicId = try buffer.readKafkaUUID()
            let isInternal = try buffer.readKafkaBool()
            let configs = try buffer.readStringMap()
            let count = try buffer.readMetaCount(minimumSize: 3)
            var partitions: [PartitionRecord] = []
            partitions.reserveCapacity(count)
            for _ in 0..<count {
                partitions.append(PartitionRecord(
                    leader: try buffer.readVarint(), leaderEpoch: try buffer.readVarint(), streamId: try buffer.readVarlong()))
            }
            guard Self.validateTopicName(name) == nil, topicId != .zero, topics[name] == nil,
                topicNamesById.updateValue(name, forKey: topicId) == nil,
                topicNamesByCollisionKey.updateValue(name, forKey: Self.collisionKey(name)) == nil
            else { throw .invalid("snapshot topic \(name) is inconsistent") }
            topics[name] = TopicRecord(name: name, topicId: topicId, isInternal: isInternal, configs: configs, partitions: partitions)
        }

        for _ in 0..<(try buffer.readMetaCount(minimumSize: 23)) {
            let stream = StreamRecord(
                id: try buffer.readVarlong(), topicId: try buffer.readKafkaUUID(), partition: try buffer.readVarint(),
                epoch: try buffer.readVarint(), startOffset: try buffer.readVarlong(), requestedStart: try buffer.readVarlong(),
                committedEnd: try buffer.readVarlong(), walWriter: try buffer.readVarint())
            guard stream.id >= 1, stream.id < nextStreamId, stream.startOffset >= 0,
                stream.startOffset <= stream.committedEnd, streams.updateValue(stream, forKey: stream.id) == nil
            else { throw .invalid("snapshot stream \(stream.id) is inconsistent") }
        }
        var partitionCount = 0
        for topic in topics.values {
            for (index, partition) in topic.partitions.enumerated() {
                partitionCount += 1
                guard let stream = streams[partition.streamId], stream.topicId == topic.topicId,
                    Int(stream.partition) == index, stream.epoch == partition.leaderEpoch
                else { throw .invalid("snapshot partition \(topic.name)-\(index) has no matching stream") }
            }
        }
        guard partitionCount == streams.count else { throw .invalid("snapshot has streams without partitions") }

        for _ in 0..<(try buffer.readMetaCount(minimumSize: 9)) {
            let object = ObjectRecord(
                id: try buffer.readVarlong(), kind: try buffer.readMetaEnum(ObjectKind.self),
                state: try buffer.readMetaEnum(ObjectState.self), deadline: try buffer.readVarlong(),
                size: try buffer.readVarlong(), ranges: try buffer.readRanges(), committedAt: try buffer.readVarlong(),
                destroyedAt: try buffer.readVarlong())
            guard object.id >= 1, object.id < nextObjectId, objects.updateValue(object, forKey: object.id) == nil else {
                throw .invalid("snapshot object \(object.id) is inconsistent")
            }
        }

        for _ in 0..<(try buffer.readMetaCount(minimumSize: 3)) {
            let topic = try buffer.readMetaString()
            let partition = try buffer.readVarint()
            let replicas = try buffer.readNodeIDs()
            let key = PartitionKey(topic: topic, partition: partition)
            guard self.partition(key) != nil, !replicas.isEmpty,
                reassignments.updateValue(
                    PendingReassignment(topic: topic, partition: partition, replicas: replicas), forKey: key) == nil
            else { throw .invalid("snapshot reassignment \(topic)-\(partition) is inconsistent") }
        }

        if buffer.readableBytes > 0 {
            let count = try buffer.readMetaCount(minimumSize: 26)
            guard count > 0, count <= Self.rememberedWriteLimit else { throw .invalid("snapshot remembers \(count) writes") }
            var previous: UInt64 = 0
            for _ in 0..<count {
                let id = try buffer.readKafkaUUID()
                let index: UInt64 = try buffer.readKafkaInteger()
                let length = try buffer.readMetaCount(minimumSize: 1)
                guard let bytes = buffer.readSlice(length: length) else { throw .invalidLength(length) }
                let result = try MetadataResult(decoding: bytes)
                // Apply order is index order, and only applied writes are remembered.
                guard id != .zero, index > previous, index <= lastAppliedIndex, rememberedWrites[id] == nil else {
                    throw .invalid("snapshot remembered write \(id) at \(index) is inconsistent")
                }
                previous = index
                rememberedWrites.remember(id, AppliedWrite(result: result, index: index), limit: Self.rememberedWriteLimit)
            }
        }
        guard buffer.readableBytes == 0 else { throw .invalid("\(buffer.readableBytes) trailing bytes after snapshot") }
        rebuildStreamIndex()
    }

    /// Rebuilds the per-stream object index exactly as incremental application maintains it.
    mutating func rebuildStreamIndex() {
        streamObjects = [:]
        for id in objects.keys.sorted() {
            guard let object = objects[id], object.state == .committed else { continue }
            for range in object.ranges {
                guard let stream = streams[range.streamId], range.endOffset > stream.startOffset else { continue }
                streamObjects[range.streamId, default: []].append(
                    ObjectLocation(objectId: id, startOffset: range.startOffset, endOffset: range.endOffset))
            }
        }
        for streamId in streamObjects.keys.sorted() {
            streamObjects[streamId]?.sort {
                ($0.startOffset, $0.endOffset, $0.objectId) < ($1.startOffset, $1.endOffset, $1.objectId)
            }
        }
    }
}
