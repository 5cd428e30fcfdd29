import ClusterMetadata
import KafkaProtocol
import TestKit

/// Produces a seeded stream of commands, mostly valid for the current state (so the state grows
/// and objects flow through every lifecycle step) with a share of stale or malformed ones.
struct CommandGenerator {
    var rng: SeededRandom
    var now: Millis = 1_000
    var topicSerial: UInt64 = 0

    init(seed: UInt64) { rng = SeededRandom(seed: seed) }

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func chance(_ percent: Int) -> Bool { int(0..<100) < percent }
    mutating func pick<T>(_ values: [T]) -> T? { values.isEmpty ? nil : values[int(0..<values.count)] }

    static let kinds: [NodeKind] = [.broker, .broker, .broker, .broker, .broker, .walWriter, .walWriter, .compactor, .controller, .zoneRouter]
    static let configs: [(String, String)] = [
        ("retention.ms", "60000"), ("retention.bytes", "-1"), ("cleanup.policy", "compact"), ("segment.bytes", "1048576"),
        ("max.message.bytes", "1000000"), ("message.timestamp.type", "CreateTime"), ("retention.ms", "x"), ("bogus", "1"),
    ]

    mutating func next(for state: MetadataState) -> MetadataCommand {
        now += Millis(int(0..<40))
        let nodeIds = state.sortedNodes.map(\.id)
        let streams = state.streams.keys.sorted()
        let topics = state.topicNames
        switch int(0..<22) {
        case 0:
            let id = NodeID(int(1..<11))
            return .registerNode(NodeRegistration(
                id: id, kind: Self.kinds[Int(id) - 1], zone: pick(["a", "b", "c"]) ?? "a",
                listener: "127.0.0.1:\(9000 + id)", admin: "127.0.0.1:\(8000 + id)"))
        case 1, 2:
            let id = pick(nodeIds) ?? 1
            let incarnation = (state.nodes[id]?.incarnation ?? 1) - (chance(15) ? 1 : 0)
            return chance(55) ? .fenceNode(id: id, incarnation: incarnation) : .unfenceNode(id: id, incarnation: incarnation)
        case 3:
            let id = pick(nodeIds) ?? 1
            return chance(30) ? .unregisterNode(id: id, incarnation: state.nodes[id]?.incarnation ?? 0) : .expirePrepared(now: now)
        case 4:
            var specs: [TopicSpec] = []
            for _ in 0..<int(1..<3) {
                topicSerial += 1
                var configs: [String: String] = [:]
                if chance(40), let (key, value) = pick(Self.configs) { configs[key] = value }
                specs.append(TopicSpec(
                    name: chance(5) ? "bad name" : "t\(int(0..<14))", topicId: uuid(chance(3) ? 1 : topicSerial),
                    partitionCount: Int32(int(-1..<6)), replicationFactor: Int16(int(-1..<4)), configs: configs,
                    isInternal: chance(10)))
            }
            return .createTopics(specs)
        case 5:
            guard chance(25) else { return appendCommit(state) }
            return .deleteTopics(names: chance(80) ? [pick(topics) ?? "none"] : ["none", pick(topics) ?? "x"], now: now)
        case 6:
            let name = pick(topics) ?? "none"
            let count = Int32(state.topics[name]?.partitions.count ?? 1) + Int32(int(-1..<4))
            return .createPartitions([PartitionCountChange(topic: name, count: count)])
        case 7:
            let name = pick(topics) ?? "none"
            if chance(50), let (key, value) = pick(Self.configs) {
                return .alterTopicConfigs(topic: name, configs: [key: value])
            }
            let operation = ConfigOperation(
                key: chance(70) ? "cleanup.policy" : "retention.ms",
                operation: pick(ConfigOperationType.allCases) ?? .set, value: pick(["delete", "compact", "5000", "nope"]))
            return .incrementalAlterTopicConfigs(topic: name, operations: [operation])
        case 8:
            let name = pick(topics) ?? "none"
            let partition = Int32(int(0..<max(1, state.topics[name]?.partitions.count ?? 1)))
            return .moveLeader(topic: name, partition: partition, to: pick(nodeIds) ?? 1)
        case 9:
            let name = pick(topics) ?? "none"
            let partition = Int32(int(0..<max(1, state.topics[name]?.partitions.count ?? 1)))
            let replicas: [NodeID]? = chance(25) ? nil : [pick(nodeIds) ?? 1]
            return .alterReassignments([ReassignmentRequest(topic: name, partition: partition, replicas: replicas)])
        case 10:
            let id = pick(streams) ?? 1
            let writers = state.sortedNodes.filter { $0.kind == .walWriter }.map(\.id)
            return .setStreamWriter(streamId: id, epoch: (state.streams[id]?.epoch ?? 0) - (chance(10) ? 1 : 0), writer: pick(writers) ?? 6)
        case 11:
            let id = pick(streams) ?? 1
            let end = state.streams[id]?.committedEnd ?? 0
            return .trimStream(streamId: id, newStart: Int64(int(0..<Int(end + 8))), now: now)
        case 12, 13:
            return .prepareObject(kind: chance(80) ? .streamSet : (chance(50) ? .stream : .routed), deadline: now + Millis(int(50..<800)))
        case 14, 15, 16:
            return appendCommit(state)
        case 17, 18:
            return compaction(state)
        case 19:
            return .objectsDeleted(Array(state.objectsDueForDeletion(now: now, gracePeriod: 100).prefix(int(0..<4))))
        case 20:
            let id = pick(nodeIds) ?? 1
            return .allocateProducerIds(brokerId: id, incarnation: state.nodes[id]?.incarnation ?? 0)
        default:
            let prepared = state.objects(in: .prepared).map(\.id)
            return .releaseObjects(chance(90) ? Array(prepared.prefix(1)) : [Int64(int(0..<1000))], now: now)
        }
    }

    mutating func appendCommit(_ state: MetadataState) -> MetadataCommand {
        let prepared = state.objects(in: .prepared).filter { $0.kind == .streamSet }.map(\.id)
        let objectId = pick(prepared) ?? Int64(int(0..<100))
        var chosen: [StreamID] = []
        let streams = state.streams.keys.sorted()
        for _ in 0..<int(1..<4) {
            if let id = pick(streams), !chosen.contains(id) { chosen.append(id) }
        }
        var ranges: [StreamRange] = []
        for id in chosen {
            guard let stream = state.streams[id] else { continue }
            let start = stream.committedEnd + (chance(5) ? 1 : 0)
            ranges.append(StreamRange(
                streamId: id, epoch: stream.epoch - (chance(5) ? 1 : 0), startOffset: start, endOffset: start + Int64(int(1..<50))))
        }
        return .commitObject(ObjectCommit(objectId: objectId, size: Int64(int(0..<10_000)), ranges: ranges), compactedSources: [], now: now)
    }

    /// Merges the first objects of a stream into one output covering everything they held.
    mutating func compaction(_ state: MetadataState) -> MetadataCommand {
        guard let streamId = pick(state.streams.keys.sorted()) else { return .expirePrepared(now: now) }
        let locations = state.objects(covering: streamId, from: 0)
        var sources: [ObjectID] = []
        for location in locations.prefix(int(1..<4)) where !sources.contains(location.objectId) { sources.append(location.objectId) }
        let output = state.objects(in: .prepared).first { $0.kind != .routed }?.id ?? 0
        var ranges: [StreamRange] = []
        for source in sources {
            for range in state.objects[source]?.ranges ?? [] where state.streams[range.streamId] != nil {
                ranges.append(range)
            }
        }
        ranges.sort { ($0.streamId, $0.startOffset) < ($1.streamId, $1.startOffset) }
        if chance(10), !ranges.isEmpty { ranges.removeLast() }
        return .commitObject(ObjectCommit(objectId: output, size: 1, ranges: ranges), compactedSources: sources, now: now)
    }
}
