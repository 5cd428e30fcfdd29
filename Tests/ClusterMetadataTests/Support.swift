import ClusterMetadata
import KafkaProtocol
import NIOCore

func uuid(_ n: UInt64) -> KafkaUUID { KafkaUUID(high: 0x4000 | n << 16, low: 0x8000_0000_0000_0000 | n) }

/// A state plus the Raft index counter, so tests read like a command log.
struct Cluster {
    var state = MetadataState()
    var index: UInt64 = 0
    var topicCounter: UInt64 = 0

    @discardableResult
    mutating func apply(_ command: MetadataCommand) -> MetadataResult {
        index += 1
        return state.apply(command, index: index, term: 1)
    }

    @discardableResult
    mutating func register(_ id: NodeID, _ kind: NodeKind = .broker, zone: String = "a") -> Int64 {
        let result = apply(.registerNode(NodeRegistration(
            id: id, kind: kind, zone: zone, listener: "127.0.0.1:\(9000 + Int(id))", admin: "127.0.0.1:\(8000 + Int(id))")))
        guard case .nodeRegistered(let incarnation) = result else { return -1 }
        return incarnation
    }

    func incarnation(_ id: NodeID) -> Int64 { state.nodes[id]?.incarnation ?? -1 }

    @discardableResult
    mutating func createTopic(_ name: String, partitions: Int32, configs: [String: String] = [:]) -> Int16 {
        topicCounter += 1
        let result = apply(.createTopics([TopicSpec(
            name: name, topicId: uuid(topicCounter), partitionCount: partitions, configs: configs)]))
        guard case .items(let items) = result, items.count == 1 else { return -99 }
        return items[0].errorCode
    }

    mutating func prepare(_ kind: ObjectKind = .streamSet, deadline: Millis = 1_000_000) -> ObjectID {
        guard case .objectPrepared(let id) = apply(.prepareObject(kind: kind, deadline: deadline)) else { return -1 }
        return id
    }

    func stream(_ topic: String, _ partition: Int32) -> StreamRecord? {
        guard let id = state.partition(PartitionKey(topic: topic, partition: partition))?.streamId else { return nil }
        return state.streams[id]
    }

    /// Commits [committedEnd, committedEnd + count) of the given partition in a new stream-set object.
    @discardableResult
    mutating func appendRecords(_ topic: String, _ partition: Int32, count: Int64, now: Millis = 10) -> MetadataResult {
        guard let stream = stream(topic, partition) else { return .error(MetadataError(-2, "no stream")) }
        let id = prepare()
        return apply(.commitObject(
            ObjectCommit(objectId: id, size: 100, ranges: [StreamRange(
                streamId: stream.id, epoch: stream.epoch, startOffset: stream.committedEnd,
                endOffset: stream.committedEnd + count)]),
            compactedSources: [], now: now))
    }
}

func items(_ result: MetadataResult) -> [Int16] {
    guard case .items(let items) = result else { return [-99] }
    return items.map(\.errorCode)
}

/// The state with its applied index and term overwritten, to check that a rejected command changed nothing else.
func content(_ state: MetadataState) -> MetadataState {
    var copy = state
    _ = copy.apply(.objectsDeleted([]), index: UInt64.max, term: 0)
    return copy
}
