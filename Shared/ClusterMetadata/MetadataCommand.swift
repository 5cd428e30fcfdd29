import KafkaProtocol
import NIOCore

/// One entry of the controller's Raft log. Every replica and follower applies it with
/// `MetadataState.apply`, so everything a command needs (times, generated ids) travels inside it.
public enum MetadataCommand: Sendable, Hashable {
    /// Registers (or re-registers) a node and hands it a fresh incarnation.
    case registerNode(NodeRegistration)
    /// Removes a node (graceful shutdown); a broker's partitions move as on fencing.
    case unregisterNode(id: NodeID, incarnation: Int64)
    /// Fences a node whose session timed out; a broker's partitions move to live brokers.
    case fenceNode(id: NodeID, incarnation: Int64)
    /// Lets a fenced node back in after it heartbeats again.
    case unfenceNode(id: NodeID, incarnation: Int64)
    /// CreateTopics; each topic succeeds or fails on its own.
    case createTopics([TopicSpec])
    /// DeleteTopics by name; objects left unreachable become destroyed at `now`.
    case deleteTopics(names: [String], now: Millis)
    /// CreatePartitions; counts must grow.
    case createPartitions([PartitionCountChange])
    /// AlterConfigs: replaces a topic's whole config set.
    case alterTopicConfigs(topic: String, configs: [String: String])
    /// IncrementalAlterConfigs for one topic, all-or-nothing.
    case incrementalAlterTopicConfigs(topic: String, operations: [ConfigOperation])
    /// Moves a partition's leadership to an active broker (bumping the leader epoch).
    case moveLeader(topic: String, partition: Int32, to: NodeID)
    /// AlterPartitionReassignments: records (or cancels) pending moves.
    case alterReassignments([ReassignmentRequest])
    /// A partition leader starts writing a stream through `writer` at `epoch`.
    case setStreamWriter(streamId: StreamID, epoch: LeaderEpoch, writer: NodeID)
    /// Retention/DeleteRecords: move a stream's start offset forward.
    case trimStream(streamId: StreamID, newStart: Int64, now: Millis)
    /// Allocates an object id; the object is garbage after `deadline`.
    case prepareObject(kind: ObjectKind, deadline: Millis)
    /// Records an uploaded object. With no sources: appends ranges at each stream's committed end
    /// (current epoch required). With sources: a compaction replacing them.
    case commitObject(ObjectCommit, compactedSources: [ObjectID], now: Millis)
    /// A compaction with several outputs replacing `sources` atomically.
    case commitCompaction(outputs: [ObjectCommit], sources: [ObjectID], now: Millis)
    /// Destroys prepared objects whose deadline is at or before `now`.
    case expirePrepared(now: Millis)
    /// Destroys prepared objects early: claimed routed objects and abandoned uploads.
    case releaseObjects([ObjectID], now: Millis)
    /// Forgets destroyed objects that were physically deleted.
    case objectsDeleted([ObjectID])
    /// AllocateProducerIds for a registered broker.
    case allocateProducerIds(brokerId: NodeID, incarnation: Int64)
}

/// Encoding format of commands and snapshots; bumped when the layout changes.
let metadataFormatVersion: UInt8 = 1

/// Command tags are part of the stored log format: never renumber, only add.
private enum Tag: UInt8 {
    case registerNode = 1, unregisterNode = 2, fenceNode = 3, unfenceNode = 4, createTopics = 5, deleteTopics = 6
    case createPartitions = 7, alterTopicConfigs = 8, incrementalAlterTopicConfigs = 9, moveLeader = 10
    case alterReassignments = 11, setStreamWriter = 12, trimStream = 13, prepareObject = 14, commitObject = 15
    case commitCompaction = 16, expirePrepared = 17, objectsDeleted = 18, allocateProducerIds = 19, releaseObjects = 20
}

// MARK: - Command encoding

extension MetadataCommand {
    /// Encodes as: format version byte, command tag byte, fields (varints, compact strings).
    public func encode() -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        encode(into: &buffer)
        return buffer
    }

    /// Appends the encoding to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(metadataFormatVersion)
        switch self {
        case .registerNode(let node):
            buffer.writeInteger(Tag.registerNode.rawValue)
            buffer.writeRegistration(node)
        case .unregisterNode(let id, let incarnation):
            buffer.writeInteger(Tag.unregisterNode.rawValue)
            buffer.writeVarint(id)
            buffer.writeVarlong(incarnation)
        case .fenceNode(let id, let incarnation):
            buffer.writeInteger(Tag.fenceNode.rawValue)
            buffer.writeVarint(id)
            buffer.writeVarlong(incarnation)
        case .unfenceNode(let id, let incarnation):
            buffer.writeInteger(Tag.unfenceNode.rawValue)
            buffer.writeVarint(id)
            buffer.writeVarlong(incarnation)
        case .createTopics(let specs):
            buffer.writeInteger(Tag.createTopics.rawValue)
            buffer.writeMetaCount(specs.count)
            for spec in specs {
                buffer.writeMetaString(spec.name)
                buffer.writeKafkaUUID(spec.topicId)
                buffer.writeVarint(spec.partitionCount)
                buffer.writeVarint(Int32(spec.replicationFactor))
                buffer.writeStringMap(spec.configs)
                buffer.writeKafkaBool(spec.isInternal)
            }
        case .deleteTopics(let names, let now):
            buffer.writeInteger(Tag.deleteTopics.rawValue)
            buffer.writeMetaCount(names.count)
            for name in names { buffer.writeMetaString(name) }
            buffer.writeVarlong(now)
        case .createPartitions(let changes):
            buffer.writeInteger(Tag.createPartitions.rawValue)
            buffer.writeMetaCount(changes.count)
            for change in changes {
                buffer.writeMetaString(change.topic)
                buffer.writeVarint(change.count)
            }
        case .alterTopicConfigs(let topic, let configs):
            buffer.writeInteger(Tag.alterTopicConfigs.rawValue)
            buffer.writeMetaString(topic)
            buffer.writeStringMap(configs)
        case .incrementalAlterTopicConfigs(let topic, let operations):
            buffer.writeInteger(Tag.incrementalAlterTopicConfigs.rawValue)
            buffer.writeMetaString(topic)
            buffer.writeMetaCount(operations.count)
            for operation in operations {
                buffer.writeMetaString(operation.key)
                buffer.writeInteger(operation.operation.rawValue)
                buffer.writeOptionalMetaString(operation.value)
            }
        case .moveLeader(let topic, let partition, let to):
            buffer.writeInteger(Tag.moveLeader.rawValue)
            buffer.writeMetaString(topic)
            buffer.writeVarint(partition)
            buffer.writeVarint(to)
        case .alterReassignments(let requests):
            buffer.writeInteger(Tag.alterReassignments.rawValue)
            buffer.writeMetaCount(requests.count)
            for request in requests {
                buffer.writeMetaString(request.topic)
                buffer.writeVarint(request.partition)
                buffer.writeKafkaBool(request.replicas != nil)
                if let replicas = request.replicas { buffer.writeNodeIDs(replicas) }
            }
        case .setStreamWriter(let streamId, let epoch, let writer):
            buffer.writeInteger(Tag.setStreamWriter.rawValue)
            buffer.writeVarlong(streamId)
            buffer.writeVarint(epoch)
            buffer.writeVarint(writer)
        case .trimStream(let streamId, let newStart, let now):
            buffer.writeInteger(Tag.trimStream.rawValue)
            buffer.writeVarlong(streamId)
            buffer.writeVarlong(newStart)
            buffer.writeVarlong(now)
        case .prepareObject(let kind, let deadline):
            buffer.writeInteger(Tag.prepareObject.rawValue)
            buffer.writeInteger(kind.rawValue)
            buffer.writeVarlong(deadline)
        case .commitObject(let commit, let sources, let now):
            buffer.writeInteger(Tag.commitObject.rawValue)
            buffer.writeObjectCommit(commit)
            buffer.writeIDList(sources)
            buffer.writeVarlong(now)
        case .commitCompaction(let outputs, let sources, let now):
            buffer.writeInteger(Tag.commitCompaction.rawValue)
            buffer.writeMetaCount(outputs.count)
            for output in outputs { buffer.writeObjectCommit(output) }
            buffer.writeIDList(sources)
            buffer.writeVarlong(now)
        case .expirePrepared(let now):
            buffer.writeInteger(Tag.expirePrepared.rawValue)
            buffer.writeVarlong(now)
        case .releaseObjects(let ids, let now):
            buffer.writeInteger(Tag.releaseObjects.rawValue)
            buffer.writeIDList(ids)
            buffer.writeVarlong(now)
        case .objectsDeleted(let ids):
            buffer.writeInteger(Tag.objectsDeleted.rawValue)
            buffer.writeIDList(ids)
        case .allocateProducerIds(let brokerId, let incarnation):
            buffer.writeInteger(Tag.allocateProducerIds.rawValue)
            buffer.writeVarint(brokerId)
            buffer.writeVarlong(incarnation)
        }
    }

    /// Decodes one command occupying all of `buffer`'s readable bytes. Never traps on bad input.
    public init(decoding buffer: ByteBuffer) throws(ProtocolError) {
        var buffer = buffer
        let version: UInt8 = try buffer.readKafkaInteger()
        guard version == metadataFormatVersion else { throw .invalid("unknown metadata command format \(version)") }
        let rawTag: UInt8 = try buffer.readKafkaInteger()
        guard let tag = Tag(rawValue: rawTag) else { throw .invalid("unknown metadata command tag \(rawTag)") }
        switch tag {
        case .registerNode:
            self = .registerNode(try buffer.readRegistration())
        case .unregisterNode:
            self = .unregisterNode(id: try buffer.readVarint(), incarnation: try buffer.readVarlong())
        case .fenceNode:
            self = .fenceNode(id: try buffer.readVarint(), incarnation: try buffer.readVarlong())
        case .unfenceNode:
            self = .unfenceNode(id: try buffer.readVarint(), incarnation: try buffer.readVarlong())
        case .createTopics:
            let count = try buffer.readMetaCount(minimumSize: 21)
            var specs: [TopicSpec] = []
            for _ in 0..<count {
                let name = try buffer.readMetaString()
                let id = try buffer.readKafkaUUID()
                let partitions = try buffer.readVarint()
                let rawFactor = try buffer.readVarint()
                guard let factor = Int16(exactly: rawFactor) else { throw .invalid("replication factor \(rawFactor)") }
                let configs = try buffer.readStringMap()
                let isInternal = try buffer.readKafkaBool()
                specs.append(TopicSpec(
                    name: name, topicId: id, partitionCount: partitions, replicationFactor: factor,
                    configs: configs, isInternal: isInternal))
            }
            self = .createTopics(specs)
        case .deleteTopics:
            let count = try buffer.readMetaCount(minimumSize: 1)
            var names: [String] = []
            for _ in 0..<count { names.append(try buffer.readMetaString()) }
            self = .deleteTopics(names: names, now: try buffer.readVarlong())
        case .createPartitions:
            let count = try buffer.readMetaCount(minimumSize: 2)
            var changes: [PartitionCountChange] = []
            for _ in 0..<count {
                changes.append(PartitionCountChange(topic: try buffer.readMetaString(), count: try buffer.readVarint()))
            }
            self = .createPartitions(changes)
        case .alterTopicConfigs:
            self = .alterTopicConfigs(topic: try buffer.readMetaString(), configs: try buffer.readStringMap())
        case .incrementalAlterTopicConfigs:
            let topic = try buffer.readMetaString()
            let count = try buffer.readMetaCount(minimumSize: 3)
            var operations: [ConfigOperation] = []
            for _ in 0..<count {
                operations.append(ConfigOperation(
                    key: try buffer.readMetaString(), operation: try buffer.readMetaEnum(ConfigOperationType.self),
                    value: try buffer.readOptionalMetaString()))
            }
            self = .incrementalAlterTopicConfigs(topic: topic, operations: operations)
        case .moveLeader:
            self = .moveLeader(topic: try buffer.readMetaString(), partition: try buffer.readVarint(), to: try buffer.readVarint())
        case .alterReassignments:
            let count = try buffer.readMetaCount(minimumSize: 3)
            var requests: [ReassignmentRequest] = []
            for _ in 0..<count {
                let topic = try buffer.readMetaString()
                let partition = try buffer.readVarint()
                let replicas = try buffer.readKafkaBool() ? try buffer.readNodeIDs() : nil
                requests.append(ReassignmentRequest(topic: topic, partition: partition, replicas: replicas))
            }
            self = .alterReassignments(requests)
        case .setStreamWriter:
            self = .setStreamWriter(streamId: try buffer.readVarlong(), epoch: try buffer.readVarint(), writer: try buffer.readVarint())
        case .trimStream:
            self = .trimStream(streamId: try buffer.readVarlong(), newStart: try buffer.readVarlong(), now: try buffer.readVarlong())
        case .prepareObject:
            self = .prepareObject(kind: try buffer.readMetaEnum(ObjectKind.self), deadline: try buffer.readVarlong())
        case .commitObject:
            self = .commitObject(try buffer.readObjectCommit(), compactedSources: try buffer.readIDList(), now: try buffer.readVarlong())
        case .commitCompaction:
            let count = try buffer.readMetaCount(minimumSize: 3)
            var outputs: [ObjectCommit] = []
            for _ in 0..<count { outputs.append(try buffer.readObjectCommit()) }
            self = .commitCompaction(outputs: outputs, sources: try buffer.readIDList(), now: try buffer.readVarlong())
        case .expirePrepared:
            self = .expirePrepared(now: try buffer.readVarlong())
        case .releaseObjects:
            self = .releaseObjects(try buffer.readIDList(), now: try buffer.readVarlong())
        case .objectsDeleted:
            self = .objectsDeleted(try buffer.readIDList())
        case .allocateProducerIds:
            self = .allocateProducerIds(brokerId: try buffer.readVarint(), incarnation: try buffer.readVarlong())
        }
        guard buffer.readableBytes == 0 else { throw .invalid("\(buffer.readableBytes) trailing bytes after metadata command") }
    }
}
