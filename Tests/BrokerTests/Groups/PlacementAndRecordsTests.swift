@testable import BrokerCore
import KafkaProtocol
import KafkaRecords
import NIOCore
import Testing

@Suite struct CoordinatorPlacementTests {
    /// Values of Java's `String.hashCode()` (computed independently with Java's formula; the last is
    /// the well-known string hashing to Integer.MIN_VALUE).
    @Test(arguments: [
        ("", Int32(0)), ("a", 97), ("group", 98_629_247), ("console-consumer-12345", 158_455_506), ("my-group", -1_906_497_762),
        ("Aa", 2112), ("BB", 2112), ("polygenelubricants", Int32.min),
    ])
    func javaHashCode(_ input: String, _ expected: Int32) {
        #expect(CoordinatorPlacement.javaHashCode(input) == expected)
    }

    @Test func partitionUsesKafkaAbs() {
        #expect(CoordinatorPlacement.kafkaAbs(Int32.min) == 0)
        #expect(CoordinatorPlacement.kafkaAbs(-5) == 5)
        #expect(CoordinatorPlacement.partition(for: "polygenelubricants", partitionCount: 50) == 0)
        #expect(CoordinatorPlacement.partition(for: "group", partitionCount: 50) == 47)
        #expect(CoordinatorPlacement.partition(for: "console-consumer-12345", partitionCount: 50) == 6)
        #expect(CoordinatorPlacement.partition(for: "my-group", partitionCount: 50) == 12)
        #expect(CoordinatorPlacement.partition(for: "a", partitionCount: 0) == 0)
    }

    /// Non-ASCII ids hash over UTF-16 code units, as Java does (a surrogate pair is two units).
    @Test func hashesUTF16CodeUnits() {
        // "é" is U+00E9 = 233; "😀" is the pair D83D DE00.
        #expect(CoordinatorPlacement.javaHashCode("é") == 233)
        #expect(CoordinatorPlacement.javaHashCode("😀") == 0xD83D &* 31 &+ 0xDE00)
    }
}

@Suite struct GroupRecordTests {
    static func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test func offsetRecordRoundTrips() throws {
        let records: [GroupRecord] = [
            .offset(group: "g", key: OffsetKey(topic: "t", partition: 3), value: CommittedOffset(offset: 42, leaderEpoch: 7, metadata: "meta", commitTimestamp: 1_000)),
            .offset(group: "g", key: OffsetKey(topic: "t", partition: 4), value: CommittedOffset(offset: 0, leaderEpoch: -1, metadata: nil, commitTimestamp: 2)),
            .offset(group: "ü-group", key: OffsetKey(topic: "t", partition: 3), value: nil),
            .metadata(group: "g", value: nil),
            .metadata(
                group: "g",
                value: GroupMetadataValue(
                    protocolType: "consumer", generationId: 9, protocolName: "range", leaderId: "m1", stateTimestamp: 77,
                    members: [
                        .init(memberId: "m1", groupInstanceId: "i1", clientId: "c", clientHost: "/127.0.0.1", rebalanceTimeoutMs: 300_000,
                              sessionTimeoutMs: 45_000, subscription: Self.bytes("sub"), assignment: Self.bytes("assign")),
                        .init(memberId: "m2", groupInstanceId: nil, clientId: "", clientHost: "", rebalanceTimeoutMs: 1, sessionTimeoutMs: 2,
                              subscription: ByteBuffer(), assignment: ByteBuffer()),
                    ])),
        ]
        for record in records {
            let (key, value) = record.encoded()
            #expect(try GroupRecord.decode(key: key, value: value) == record)
        }
    }

    @Test func unknownKeyTypesAndVersionsAreSkippedAndGarbageThrows() throws {
        var key = ByteBuffer()
        key.writeKafkaInteger(Int16(9))
        #expect(try GroupRecord.decode(key: key, value: nil) == nil)
        let (offsetKey, _) = GroupRecord.offset(group: "g", key: OffsetKey(topic: "t", partition: 0), value: nil).encoded()
        var futureValue = ByteBuffer()
        futureValue.writeKafkaInteger(Int16(5))
        #expect(try GroupRecord.decode(key: offsetKey, value: futureValue) == nil)
        #expect(throws: ProtocolError.self) { try GroupRecord.decode(key: nil, value: nil) }
        var truncated = offsetKey
        truncated.moveWriterIndex(to: truncated.writerIndex - 2)
        #expect(throws: ProtocolError.self) { try GroupRecord.decode(key: truncated, value: nil) }
        // A member count far beyond the bytes present is refused before allocating.
        let (metadataKey, _) = GroupRecord.metadata(group: "g", value: nil).encoded()
        var huge = ByteBuffer()
        huge.writeKafkaInteger(Int16(0))
        huge.writeKafkaString(nil, compact: true)
        huge.writeKafkaInteger(Int32(1))
        huge.writeKafkaString(nil, compact: true)
        huge.writeKafkaString(nil, compact: true)
        huge.writeKafkaInteger(Int64(0))
        huge.writeUnsignedVarint(UInt32.max)
        #expect(throws: ProtocolError.self) { try GroupRecord.decode(key: metadataKey, value: huge) }
    }

    @Test func replayKeepsTheLastRecordOfEachKeyAndHonoursTombstones() throws {
        var replay = GroupReplay()
        let key = OffsetKey(topic: "t", partition: 0)
        replay.apply(.offset(group: "a", key: key, value: CommittedOffset(offset: 1, leaderEpoch: -1, metadata: nil, commitTimestamp: 0)), position: 0)
        replay.apply(.offset(group: "a", key: key, value: CommittedOffset(offset: 5, leaderEpoch: -1, metadata: "x", commitTimestamp: 0)), position: 1)
        replay.apply(.offset(group: "b", key: key, value: CommittedOffset(offset: 9, leaderEpoch: -1, metadata: nil, commitTimestamp: 0)), position: 2)
        replay.apply(.offset(group: "b", key: key, value: nil), position: 3)
        let groups = replay.groups(config: GroupConfig(), now: 0)
        #expect(groups.keys.sorted() == ["a"])
        #expect(groups["a"]?.offsets[key]?.offset == 5)
        #expect(groups["a"]?.state == .empty)
    }

    @Test func replayReadsRecordBatches() throws {
        let records: [GroupRecord] = [
            .offset(group: "a", key: OffsetKey(topic: "t", partition: 1), value: CommittedOffset(offset: 3, leaderEpoch: 2, metadata: "", commitTimestamp: 10)),
            .metadata(group: "a", value: GroupMetadataValue(protocolType: "consumer", generationId: 4, protocolName: nil, leaderId: nil, stateTimestamp: 1, members: [])),
        ]
        let batch = try GroupRecord.batch(records, now: 10).stamped(baseOffset: 100, partitionLeaderEpoch: 1)
        var replay = GroupReplay()
        replay.apply(batch: batch)
        #expect(replay.corruptRecords == 0)
        let group = try #require(replay.groups(config: GroupConfig(), now: 0)["a"])
        #expect(group.generationId == 4)
        #expect(group.protocolType == "consumer")
        #expect(group.offsets[OffsetKey(topic: "t", partition: 1)]?.offset == 3)
        #expect(group.offsetPositions[OffsetKey(topic: "t", partition: 1)] == 100)
    }
}
