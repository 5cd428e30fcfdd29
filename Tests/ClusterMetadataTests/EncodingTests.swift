import ClusterMetadata
import KafkaProtocol
import NIOCore
import Testing

@Suite struct EncodingTests {
    static let range = StreamRange(streamId: 7, epoch: 3, startOffset: 100, endOffset: Int64.max)

    /// One or more instances of every command, with edge values.
    static let examples: [MetadataCommand] = [
        .registerNode(NodeRegistration(id: 0, kind: .controller, zone: "", listener: "[::1]:9092", admin: "h:1")),
        .registerNode(NodeRegistration(id: Int32.max, kind: .zoneRouter, zone: "zone-ü", listener: "a", admin: "b")),
        .unregisterNode(id: 3, incarnation: Int64.max),
        .fenceNode(id: -1, incarnation: Int64.min),
        .unfenceNode(id: 5, incarnation: 0),
        .createTopics([]),
        .createTopics([
            TopicSpec(name: "t", topicId: KafkaUUID(high: UInt64.max, low: 1), partitionCount: Int32.min, replicationFactor: Int16.min,
                      configs: ["retention.ms": "1", "cleanup.policy": "compact,delete"], isInternal: true),
            TopicSpec(name: "u", topicId: .zero, partitionCount: 3),
        ]),
        .deleteTopics(names: ["a", "b"], now: -5),
        .createPartitions([PartitionCountChange(topic: "t", count: 9), PartitionCountChange(topic: "", count: -1)]),
        .alterTopicConfigs(topic: "t", configs: [:]),
        .alterTopicConfigs(topic: "t", configs: ["segment.bytes": "14", "a": ""]),
        .incrementalAlterTopicConfigs(topic: "t", operations: [
            ConfigOperation(key: "k", operation: .set, value: "v"), ConfigOperation(key: "d", operation: .delete, value: nil),
            ConfigOperation(key: "cleanup.policy", operation: .append, value: ""),
            ConfigOperation(key: "cleanup.policy", operation: .subtract, value: "x"),
        ]),
        .moveLeader(topic: "t", partition: Int32.max, to: -1),
        .alterReassignments([
            ReassignmentRequest(topic: "t", partition: 0, replicas: nil), ReassignmentRequest(topic: "t", partition: 1, replicas: []),
            ReassignmentRequest(topic: "t", partition: 2, replicas: [1, 2, Int32.min]),
        ]),
        .setStreamWriter(streamId: Int64.max, epoch: Int32.min, writer: 4),
        .trimStream(streamId: 1, newStart: 1 << 40, now: 12),
        .prepareObject(kind: .streamSet, deadline: 0),
        .prepareObject(kind: .routed, deadline: Int64.max),
        .commitObject(ObjectCommit(objectId: 1, size: 0, ranges: []), compactedSources: [], now: 1),
        .commitObject(ObjectCommit(objectId: 9, size: 1 << 33, ranges: [range, range]), compactedSources: [1, 2, -3], now: 2),
        .commitCompaction(outputs: [], sources: [], now: 0),
        .commitCompaction(outputs: [ObjectCommit(objectId: 4, size: 5, ranges: [range]), ObjectCommit(objectId: 6, size: 7, ranges: [])],
                          sources: [8], now: 99),
        .expirePrepared(now: Int64.min),
        .releaseObjects([], now: 0),
        .releaseObjects([1, Int64.max], now: 3),
        .objectsDeleted([]),
        .objectsDeleted([Int64.min, 0, 5]),
        .allocateProducerIds(brokerId: 2, incarnation: 17),
    ]

    @Test(arguments: examples)
    func roundTrip(command: MetadataCommand) throws {
        let encoded = command.encode()
        #expect(encoded.getInteger(at: encoded.readerIndex, as: UInt8.self) == 1)
        #expect(try MetadataCommand(decoding: encoded) == command)
        // Equal commands encode to equal bytes (maps are written in key order).
        #expect(try MetadataCommand(decoding: encoded).encode() == encoded)
    }

    @Test func rejectsTrailingBytesUnknownVersionAndTag() {
        var trailing = MetadataCommand.expirePrepared(now: 1).encode()
        trailing.writeInteger(UInt8(0))
        #expect(throws: ProtocolError.self) { try MetadataCommand(decoding: trailing) }
        var version = MetadataCommand.expirePrepared(now: 1).encode()
        version.setInteger(UInt8(2), at: 0)
        #expect(throws: ProtocolError.self) { try MetadataCommand(decoding: version) }
        var tag = MetadataCommand.expirePrepared(now: 1).encode()
        tag.setInteger(UInt8(200), at: 1)
        #expect(throws: ProtocolError.self) { try MetadataCommand(decoding: tag) }
        #expect(throws: ProtocolError.self) { try MetadataCommand(decoding: ByteBuffer()) }
    }

    @Test func hugeCountsAreRejectedBeforeAllocating() {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1))
        buffer.writeInteger(UInt8(18))  // objectsDeleted
        buffer.writeUnsignedVarint(UInt32.max)
        #expect(throws: ProtocolError.self) { try MetadataCommand(decoding: buffer) }
    }

    @Test func emptyStateSnapshotRoundTrips() throws {
        let state = MetadataState()
        #expect(try MetadataState(snapshot: state.encodeSnapshot()) == state)
    }

    @Test func inconsistentSnapshotsAreRejected() throws {
        var cluster = Cluster()
        cluster.register(1)
        cluster.createTopic("t", partitions: 2)
        cluster.appendRecords("t", 0, count: 4)
        let good = cluster.state.encodeSnapshot()
        #expect(try MetadataState(snapshot: good) == cluster.state)
        // Every strict prefix is rejected.
        for length in 0..<good.readableBytes {
            #expect(throws: ProtocolError.self) { try MetadataState(snapshot: good.getSlice(at: 0, length: length) ?? ByteBuffer()) }
        }
        var trailing = good
        trailing.writeInteger(UInt8(0))
        #expect(throws: ProtocolError.self) { try MetadataState(snapshot: trailing) }
    }

    @Test func exhaustedCountersFromASnapshotGiveErrorsNotTraps() throws {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1))
        buffer.writeInteger(UInt64(9))
        buffer.writeInteger(UInt64(2))
        buffer.writeVarlong(Int64.max)  // next incarnation
        buffer.writeVarlong(Int64.max)  // next stream id
        buffer.writeVarlong(Int64.max)  // next object id
        buffer.writeVarlong(Int64.max - 10)  // next producer id
        for _ in 0..<5 { buffer.writeUnsignedVarint(0) }
        var state = try MetadataState(snapshot: buffer)
        #expect(state.lastAppliedIndex == 9)
        #expect(state.apply(.createTopics([TopicSpec(name: "t", topicId: uuid(1), partitionCount: 1)]), index: 10) == .items([
            ItemResult(name: "t", errorCode: MetadataErrorCode.unknownServerError, message: "stream ids exhausted"),
        ]))
        #expect(state.apply(.prepareObject(kind: .stream, deadline: 1), index: 11).errorCode == MetadataErrorCode.unknownServerError)
        #expect(state.apply(.registerNode(NodeRegistration(id: 1, kind: .broker, zone: "a", listener: "l", admin: "a")), index: 12).errorCode
            == MetadataErrorCode.unknownServerError)
        #expect(state.topics.isEmpty && state.objects.isEmpty && state.nodes.isEmpty)
    }
}
