import KafkaProtocol
import KafkaRecords
import NIOCore
import Testing

@testable import BrokerCore

/// Fetch against an in-process broker, at the last non-flexible version (v11) and the flexible v12,
/// reading both from the log cache and (with no cache) from committed objects in the object store.
@Suite(.timeLimit(.minutes(2))) struct FetchHandlerTests {
    static let versions: [Int16] = [11, 12]

    /// Creates `topic` and produces `k0…k4` to its partition 0 in two batches (offsets 0-2 and 3-4).
    @discardableResult
    static func topicWithFive(_ broker: InProcessBroker, _ topic: String) async throws -> [TestRecord] {
        try await broker.createTopic(topic)
        let records = Records.numbered(0, count: 5)
        let response = try await broker.send(
            ProduceRequest.make([(topic, 0, try Records.batch(Array(records[0..<3])))]), version: 9)
        #expect(try response.partition(topic, 0).baseOffset == 0)
        let second = try await broker.send(ProduceRequest.make([(topic, 0, try Records.batch(Array(records[3...])))]), version: 9)
        #expect(try second.partition(topic, 0).baseOffset == 3)
        return records
    }

    @Test(arguments: versions, [0, 8 << 20]) func fetchReturnsWhatWasProduced(_ version: Int16, logCacheBytes: Int) async throws {
        try await InProcessBroker.with(logCacheBytes: logCacheBytes) { broker in
            let produced = try await Self.topicWithFive(broker, "reads")
            let response = try await broker.send(FetchRequest.make([("reads", 0, 0)]), version: version)
            #expect(response.errorCode == KafkaCode.none)
            #expect(response.sessionId == 0)
            #expect(response.responses.map(\.topic) == ["reads"])
            #expect(response.responses.first?.topicId == .zero, "names, not ids, below v13")
            let partition = try response.partition("reads", 0)
            #expect(partition.errorCode == KafkaCode.none)
            #expect(partition.highWatermark == 5)
            #expect(partition.lastStableOffset == 5)
            #expect(partition.logStartOffset == 0)
            #expect(partition.preferredReadReplica == -1)
            let read = try Records.read(partition.records)
            #expect(read.map(\.offset) == [0, 1, 2, 3, 4])
            #expect(read.map(\.record) == produced)
            let batches = try Records.batches(partition.records)
            #expect(batches.map(\.baseOffset) == [0, 3])
            #expect(batches.map(\.partitionLeaderEpoch) == [0, 0], "stamped with the leader's epoch")

            // From inside the first batch: the whole batch comes back (clients skip the offsets before theirs).
            let middle = try await broker.send(FetchRequest.make([("reads", 0, 1)]), version: version)
            #expect(try Records.batches(middle.partition("reads", 0).records).map(\.baseOffset) == [0, 3])
            let tail = try await broker.send(FetchRequest.make([("reads", 0, 3)]), version: version)
            #expect(try Records.read(tail.partition("reads", 0).records).map(\.record) == Array(produced[3...]))
            // Without a log cache every read went to the committed objects the appends were acknowledged in.
            let reader = try #require(broker.context.committed as? CommittedReader)
            #expect((reader.stats.gets > 0) == (logCacheBytes == 0))
        }
    }

    @Test(arguments: versions) func partitionMaxBytesStillReturnsOneBatch(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await Self.topicWithFive(broker, "budget")
            let partition = try await broker.send(FetchRequest.make([("budget", 0, 0)], partitionMaxBytes: 1), version: version)
                .partition("budget", 0)
            #expect(try Records.batches(partition.records).map(\.baseOffset) == [0], "at least one batch, and only one (KIP-74)")
            #expect(partition.highWatermark == 5)
        }
    }

    @Test(arguments: versions) func fetchAtTheHighWatermarkReturnsNoRecords(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await Self.topicWithFive(broker, "caught-up")
            let response = try await broker.send(FetchRequest.make([("caught-up", 0, 5)], maxWaitMs: 1), version: version)
            let partition = try response.partition("caught-up", 0)
            #expect(partition.errorCode == KafkaCode.none)
            #expect(partition.highWatermark == 5)
            #expect(partition.records?.readableBytes ?? 0 == 0)
        }
    }

    @Test func waitingFetchAnswersWithRecordsProducedMeanwhile() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("long-poll")
            // Waits up to 30 s; the produce below ends the wait (if it arrives first, there is nothing to wait for).
            async let fetched = broker.send(FetchRequest.make([("long-poll", 0, 0)], maxWaitMs: 30_000), version: 12)
            let produced = try await broker.send(
                ProduceRequest.make([("long-poll", 0, try Records.batch(Records.numbered(0, count: 2)))]), version: 9)
            #expect(try produced.partition("long-poll", 0).errorCode == KafkaCode.none)
            let partition = try await fetched.partition("long-poll", 0)
            #expect(partition.highWatermark == 2)
            #expect(try Records.read(partition.records).map(\.record) == Records.numbered(0, count: 2))
        }
    }

    @Test(arguments: versions) func offsetsOutsideTheLogAreOutOfRange(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await Self.topicWithFive(broker, "range")
            for offset: Int64 in [6, 1_000, -1] {
                let response = try await broker.send(FetchRequest.make([("range", 0, offset)]), version: version)
                let partition = try response.partition("range", 0)
                #expect(partition.errorCode == KafkaCode.offsetOutOfRange, "offset \(offset)")
                #expect(partition.highWatermark == 5)
                #expect(partition.logStartOffset == 0)
                #expect(partition.records?.readableBytes ?? 0 == 0)
            }
        }
    }

    @Test(arguments: versions) func unknownTopicsAndPartitionsAreReported(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await Self.topicWithFive(broker, "present")
            let response = try await broker.send(
                FetchRequest.make([("absent", 0, 0), ("present", 3, 0), ("present", 0, 0)]), version: version)
            for (topic, index) in [("absent", Int32(0)), ("present", 3)] {
                let partition = try response.partition(topic, index)
                #expect(partition.errorCode == KafkaCode.unknownTopicOrPartition, "\(topic)-\(index)")
                #expect(partition.highWatermark == -1)
                #expect(partition.logStartOffset == -1)
            }
            // An error in one partition answers at once, with what the others have.
            #expect(try Records.read(response.partition("present", 0).records).count == 5)
        }
    }

    @Test(arguments: versions) func partitionsLedElsewhereNameTheirLeaderFromV12(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.register(node: 2, zone: "b", listener: "broker-2.floe.test:19093")
            try await broker.createTopic("split", partitions: 4)
            let topic = try #require(await broker.metadata.state.topics["split"])
            let elsewhere = try #require(topic.partitions.firstIndex { $0.leader == 2 }, "placement put no partition on broker 2")
            let response = try await broker.send(FetchRequest.make([("split", Int32(elsewhere), 0)]), version: version)
            let partition = try response.partition("split", Int32(elsewhere))
            #expect(partition.errorCode == KafkaCode.notLeaderOrFollower)
            #expect(partition.currentLeader.leaderId == (version >= 12 ? 2 : -1))
            #expect(partition.currentLeader.leaderEpoch == (version >= 12 ? topic.partitions[elsewhere].leaderEpoch : -1))
        }
    }

    @Test(arguments: versions) func aNewerLeaderEpochThanTheBrokersIsUnknown(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("epochs")
            let ahead = try await broker.send(FetchRequest.make([("epochs", 0, 0)], currentLeaderEpoch: 3), version: version)
            #expect(try ahead.partition("epochs", 0).errorCode == KafkaCode.unknownLeaderEpoch)
            let current = try await broker.send(FetchRequest.make([("epochs", 0, 0)], currentLeaderEpoch: 0), version: version)
            #expect(try current.partition("epochs", 0).errorCode == KafkaCode.none)
        }
    }

    /// A produce that lands while a fetch passes over its partitions (after it looked at one, before
    /// it waits) must end the wait, not leave it to `max_wait_ms`.
    @Test func aChangeBetweenAPassAndItsWaitEndsTheWaitAtOnce() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("between")
            let seen = await broker.replicas.changeCount
            let produced = try await broker.send(
                ProduceRequest.make([("between", 0, try Records.batch(Records.numbered(0, count: 1)))]), version: 9)
            #expect(try produced.partition("between", 0).errorCode == KafkaCode.none)
            let started = ContinuousClock.now
            let now = await broker.replicas.waitForChange(after: seen, timeout: .seconds(30))
            #expect(now > seen)
            #expect(ContinuousClock.now - started < .seconds(15), "the change before the wait was missed")
        }
    }

    @Test func incrementalFetchSessionsAreRefused() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("sessions")
            var request = FetchRequest.make([("sessions", 0, 0)])
            request.sessionId = 42
            request.sessionEpoch = 1
            let response = try await broker.send(request, version: 12)
            #expect(response.errorCode == KafkaCode.fetchSessionIdNotFound)
            #expect(response.responses.isEmpty)
        }
    }
}
