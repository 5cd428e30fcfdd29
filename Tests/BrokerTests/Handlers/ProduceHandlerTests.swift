import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import NIOCore
import Testing

@testable import BrokerCore

/// Produce against an in-process broker: offsets, refusals and what a refusal leaves behind, at a
/// non-flexible version without error messages (v7), the first with them (v8) and the flexible v9.
@Suite(.timeLimit(.minutes(2))) struct ProduceHandlerTests {
    static let versions: [Int16] = [7, 8, 9]

    @Test(arguments: versions) func offsetsStartAtZeroAndContinue(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("orders", partitions: 2)
            let first = try await broker.send(
                ProduceRequest.make([
                    ("orders", 0, try Records.batch(Records.numbered(0, count: 3))),
                    ("orders", 1, try Records.batch(Records.numbered(0, count: 1))),
                ]), version: version)
            #expect(first.responses.map(\.name) == ["orders"])
            #expect(first.responses.first?.partitionResponses.map(\.index) == [0, 1])
            let zero = try first.partition("orders", 0)
            #expect(zero.errorCode == KafkaCode.none)
            #expect(zero.baseOffset == 0)
            #expect(zero.logStartOffset == 0)
            #expect(zero.logAppendTimeMs == -1, "CreateTime topics answer -1")
            #expect(zero.errorMessage == nil)
            #expect(try first.partition("orders", 1).baseOffset == 0, "partitions count offsets separately")

            let second = try await broker.send(
                ProduceRequest.make([("orders", 0, try Records.batch(Records.numbered(3, count: 2)))]), version: version)
            #expect(try second.partition("orders", 0).errorCode == KafkaCode.none)
            #expect(try second.partition("orders", 0).baseOffset == 3)

            // Two batches in one record set take consecutive offsets.
            var set = try Records.batch(Records.numbered(5, count: 2))
            var more = try Records.batch(Records.numbered(7, count: 4))
            set.writeBuffer(&more)
            let third = try await broker.send(ProduceRequest.make([("orders", 0, set)]), version: version)
            #expect(try third.partition("orders", 0).baseOffset == 5)
            let view = try await broker.replicas.view(PartitionKey(topic: "orders", partition: 0))
            #expect(view.highWatermark == 11)
        }
    }

    @Test(arguments: versions) func unknownTopicsAndPartitionsAreRefused(_ version: Int16) async throws {
        // Auto-creation is on: Produce still does not create topics (clients create them through Metadata).
        try await InProcessBroker.with(autoCreateTopics: true) { broker in
            try await broker.createTopic("known", partitions: 2)
            let records = try Records.batch(Records.numbered(0, count: 1))
            let response = try await broker.send(
                ProduceRequest.make([("missing", 0, records), ("known", 2, records), ("known", -1, records), ("known", 1, records)]),
                version: version)
            for (topic, partition) in [("missing", Int32(0)), ("known", 2), ("known", -1)] {
                let answer = try response.partition(topic, partition)
                #expect(answer.errorCode == KafkaCode.unknownTopicOrPartition, "\(topic)-\(partition)")
                #expect(answer.baseOffset == -1)
                #expect((answer.errorMessage != nil) == (version >= 8), "error messages exist from v8 on")
            }
            #expect(try response.partition("known", 1).errorCode == KafkaCode.none, "a valid partition of the same request is appended")
            #expect(try response.partition("known", 1).baseOffset == 0)
            #expect(await broker.metadata.state.topics["missing"] == nil)
        }
    }

    @Test(arguments: versions) func corruptBatchesAreRefusedWithoutAppending(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("events")
            let good = try await broker.send(
                ProduceRequest.make([("events", 0, try Records.batch(Records.numbered(0, count: 2)))]), version: version)
            #expect(try good.partition("events", 0).baseOffset == 0)

            var corrupt = try Records.batch(Records.numbered(2, count: 3))
            Self.flipCRCByte(of: &corrupt)
            let refused = try await broker.send(ProduceRequest.make([("events", 0, corrupt)]), version: version)
            let answer = try refused.partition("events", 0)
            #expect(answer.errorCode == KafkaCode.corruptMessage)
            #expect(answer.baseOffset == -1)
            #expect(answer.recordErrors.map(\.batchIndex) == (version >= 8 ? [0] : []))

            // A good batch followed by a corrupt one: the whole set is refused, naming the second batch.
            var mixed = try Records.batch(Records.numbered(2, count: 1))
            var bad = try Records.batch(Records.numbered(3, count: 1))
            Self.flipCRCByte(of: &bad)
            mixed.writeBuffer(&bad)
            let mixedAnswer = try await broker.send(ProduceRequest.make([("events", 0, mixed)]), version: version)
            #expect(try mixedAnswer.partition("events", 0).errorCode == KafkaCode.corruptMessage)
            #expect(try mixedAnswer.partition("events", 0).recordErrors.map(\.batchIndex) == (version >= 8 ? [1] : []))

            // A record set cut inside a batch is refused too.
            let whole = try Records.batch(Records.numbered(2, count: 1))
            let cut = whole.getSlice(at: whole.readerIndex, length: whole.readableBytes - 5) ?? ByteBuffer()
            #expect(try await broker.send(ProduceRequest.make([("events", 0, cut)]), version: version).partition("events", 0).errorCode
                == KafkaCode.corruptMessage)

            let next = try await broker.send(
                ProduceRequest.make([("events", 0, try Records.batch(Records.numbered(2, count: 1)))]), version: version)
            #expect(try next.partition("events", 0).errorCode == KafkaCode.none)
            #expect(try next.partition("events", 0).baseOffset == 2, "refused sets took no offsets")
            let fetched = try await broker.send(FetchRequest.make([("events", 0, 0)]), version: 12)
            #expect(try Records.read(fetched.partition("events", 0).records).map(\.record.value) == ["v0", "v1", "v2"])
        }
    }

    @Test(arguments: versions) func batchesOverMaxMessageBytesAreRefused(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("small", configs: ["max.message.bytes": "1024"])
            let large = try Records.batch([TestRecord(key: "k", value: String(repeating: "x", count: 2_000))])
            #expect(large.readableBytes > 1024)
            let refused = try await broker.send(ProduceRequest.make([("small", 0, large)]), version: version)
            #expect(try refused.partition("small", 0).errorCode == KafkaCode.messageTooLarge)
            #expect(try refused.partition("small", 0).baseOffset == -1)

            let fits = try await broker.send(
                ProduceRequest.make([("small", 0, try Records.batch([TestRecord(key: "k", value: String(repeating: "x", count: 900))]))]),
                version: version)
            #expect(try fits.partition("small", 0).errorCode == KafkaCode.none)
            #expect(try fits.partition("small", 0).baseOffset == 0)
        }
    }

    @Test func requiredAcksOutsideMinusOneToOneAreRefused() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("acks")
            let response = try await broker.send(
                ProduceRequest.make(acks: 2, [("acks", 0, try Records.batch(Records.numbered(0, count: 1)))]), version: 9)
            #expect(try response.partition("acks", 0).errorCode == KafkaCode.invalidRequiredAcks)
            let view = try await broker.replicas.view(PartitionKey(topic: "acks", partition: 0))
            #expect(view.logEndOffset == 0)
        }
    }

    @Test func acksZeroIsNotAnsweredButAppends() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("fire-and-forget")
            let silent = try await broker.exchange(
                ProduceRequest.make(acks: 0, [("fire-and-forget", 0, try Records.batch(Records.numbered(0, count: 4)))]), version: 9)
            guard case .noResponse = silent else {
                Issue.record("acks=0 answered \(silent)")
                return
            }
            // Offsets are assigned in arrival order, so the acknowledged produce lands after the silent one.
            let acked = try await broker.send(
                ProduceRequest.make(acks: 1, [("fire-and-forget", 0, try Records.batch(Records.numbered(4, count: 1)))]), version: 9)
            #expect(try acked.partition("fire-and-forget", 0).baseOffset == 4)
        }
    }

    @Test func produceToAPartitionLedElsewhereIsRedirected() async throws {
        try await InProcessBroker.with { broker in
            try await broker.register(node: 2, zone: "b", listener: "broker-2.floe.test:19093")
            try await broker.createTopic("shared", partitions: 4)
            let topic = try #require(await broker.metadata.state.topics["shared"])
            let elsewhere = try #require(topic.partitions.firstIndex { $0.leader == 2 }, "placement put no partition on broker 2")
            let here = try #require(topic.partitions.firstIndex { $0.leader == InProcessBroker.nodeId })
            let records = try Records.batch(Records.numbered(0, count: 1))
            let response = try await broker.send(
                ProduceRequest.make([("shared", Int32(elsewhere), records), ("shared", Int32(here), records)]), version: 9)
            #expect(try response.partition("shared", Int32(elsewhere)).errorCode == KafkaCode.notLeaderOrFollower)
            #expect(try response.partition("shared", Int32(here)).errorCode == KafkaCode.none)
        }
    }

    @Test func logAppendTimeTopicsStampTheBrokerClock() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("stamped", configs: ["message.timestamp.type": "LogAppendTime"])
            let response = try await broker.send(
                ProduceRequest.make([("stamped", 0, try Records.batch(Records.numbered(0, count: 2, timestamp: 5)))]), version: 9)
            #expect(try response.partition("stamped", 0).logAppendTimeMs == InProcessBroker.now)
            let fetched = try await broker.send(FetchRequest.make([("stamped", 0, 0)]), version: 12)
            let batches = try Records.batches(fetched.partition("stamped", 0).records)
            #expect(batches.map(\.timestampType) == [.logAppendTime])
            #expect(batches.map(\.maxTimestamp) == [InProcessBroker.now])
        }
    }

    static func flipCRCByte(of batch: inout ByteBuffer) {
        let at = batch.readerIndex + RecordBatchHeader.Offset.crc
        let byte = batch.getInteger(at: at, as: UInt8.self) ?? 0
        batch.setInteger(byte ^ 0xFF, at: at)
    }
}
