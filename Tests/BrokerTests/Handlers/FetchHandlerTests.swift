import KafkaProtocol
import KafkaRecords
import NIOCore
import TestKit
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

    @Test func minBytesZeroAnswersAtOnceInsteadOfWaiting() async throws {
        try await InProcessBroker.with { broker in
            try await Self.topicWithFive(broker, "no-wait")
            // Caught up, max_wait 30 s, min_bytes 0: the answer comes without the fetch ever waiting.
            let request = FetchRequest.make([("no-wait", 0, 5)], maxWaitMs: 30_000, minBytes: 0)
            let replicas = broker.replicas
            let waited = await withTaskGroup(of: Bool.self) { group in
                group.addTask { _ = try? await broker.send(request, version: 12); return false }
                group.addTask { await waitUntil(timeout: .seconds(60)) { await replicas.waitingReaders > 0 } }
                let first = await group.next() ?? true
                group.cancelAll()
                if first {
                    // It waits: end the wait with a produce so the test finishes.
                    _ = try? await broker.send(ProduceRequest.make([("no-wait", 0, try! Records.batch(Records.numbered(5, count: 1)))]), version: 9)
                }
                return first
            }
            #expect(!waited, "a fetch with min_bytes 0 waited for data")
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

    /// The partitions an answer names, as "topic-index", in answer order.
    static func named(_ response: FetchResponse) -> [String] {
        response.responses.flatMap { topic in topic.partitions.map { "\(topic.topic)-\($0.partitionIndex)" } }
    }

    static func produce(_ broker: InProcessBroker, _ topic: String, _ partition: Int32, _ records: [TestRecord]) async throws {
        let response = try await broker.send(ProduceRequest.make([(topic, partition, try Records.batch(records))]), version: 9)
        #expect(try response.partition(topic, partition).errorCode == KafkaCode.none)
    }

    @Test(arguments: versions) func incrementalRequestsAndAnswersNameOnlyWhatChanged(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("sessions", partitions: 4)
            try await Self.produce(broker, "sessions", 0, Records.numbered(0, count: 2))
            try await Self.produce(broker, "sessions", 1, Records.numbered(10, count: 2))
            let all = (0..<4).map { ("sessions", Int32($0), Int64(0)) }
            let full = try await broker.send(FetchRequest.make(all).session(0, epoch: 0), version: version)
            #expect(full.errorCode == KafkaCode.none)
            let id = full.sessionId
            #expect(id != 0, "epoch 0 creates a session")
            #expect(Self.named(full) == ["sessions-0", "sessions-1", "sessions-2", "sessions-3"], "a full answer names every partition")
            #expect(try Records.read(full.partition("sessions", 1).records).map(\.record) == Records.numbered(10, count: 2))

            // The client moved on in 0 and 1 and says only that; nothing else happened, so nothing is named.
            let moved = try await broker.send(FetchRequest.make([("sessions", 0, 2), ("sessions", 1, 2)]).session(id, epoch: 1), version: version)
            #expect(moved.errorCode == KafkaCode.none)
            #expect(moved.sessionId == id)
            #expect(Self.named(moved) == [])

            // Records in 2, which the request does not list: the session still fetches it, from the offset it holds.
            try await Self.produce(broker, "sessions", 2, Records.numbered(20, count: 3))
            let news = try await broker.send(FetchRequest.make([]).session(id, epoch: 2), version: version)
            #expect(Self.named(news) == ["sessions-2"])
            let partition = try news.partition("sessions", 2)
            #expect(partition.highWatermark == 3)
            #expect(try Records.read(partition.records).map(\.record) == Records.numbered(20, count: 3))
            #expect(Self.named(try await broker.send(FetchRequest.make([("sessions", 2, 3)]).session(id, epoch: 3), version: version)) == [])

            // A new log start offset is news without records.
            var delete = DeleteRecordsRequest()
            var target = DeleteRecordsRequest.DeleteRecordsTopic()
            target.name = "sessions"
            var deletion = DeleteRecordsRequest.DeleteRecordsPartition()
            deletion.partitionIndex = 0
            deletion.offset = 1
            target.partitions = [deletion]
            delete.topics = [target]
            delete.timeoutMs = 10_000
            _ = try await broker.send(delete, version: 2)
            let trimmed = try await broker.send(FetchRequest.make([]).session(id, epoch: 4), version: version)
            #expect(Self.named(trimmed) == ["sessions-0"])
            #expect(try trimmed.partition("sessions", 0).logStartOffset == 1)
            #expect(try trimmed.partition("sessions", 0).records?.readableBytes ?? 0 == 0)

            // A forgotten partition is no longer fetched.
            try await Self.produce(broker, "sessions", 3, Records.numbered(30, count: 1))
            let forgot = try await broker.send(FetchRequest.make([]).session(id, epoch: 5, forgetting: [("sessions", 3)]), version: version)
            #expect(Self.named(forgot) == [])
            // An unknown partition joins the session and reports its error in every answer.
            let joined = try await broker.send(FetchRequest.make([("sessions", 9, 0)]).session(id, epoch: 6), version: version)
            #expect(try joined.partition("sessions", 9).errorCode == KafkaCode.unknownTopicOrPartition)
            let again = try await broker.send(FetchRequest.make([]).session(id, epoch: 7), version: version)
            #expect(Self.named(again) == ["sessions-9"])

            // A repeated or skipped epoch is refused; so is an unknown session.
            for epoch: Int32 in [7, 9] {
                let refused = try await broker.send(FetchRequest.make([]).session(id, epoch: epoch), version: version)
                #expect(refused.errorCode == KafkaCode.invalidFetchSessionEpoch, "epoch \(epoch)")
                #expect(refused.responses.isEmpty)
                #expect(refused.sessionId == 0)
            }
            let unknown = try await broker.send(FetchRequest.make([("sessions", 0, 0)]).session(id &+ 1, epoch: 1), version: version)
            #expect(unknown.errorCode == KafkaCode.fetchSessionIdNotFound)
            #expect(unknown.responses.isEmpty)

            // Epoch -1 closes the session and is a sessionless full fetch.
            let closing = try await broker.send(FetchRequest.make([("sessions", 1, 0)]).session(id, epoch: -1), version: version)
            #expect(closing.errorCode == KafkaCode.none)
            #expect(closing.sessionId == 0)
            #expect(Self.named(closing) == ["sessions-1"])
            let closed = try await broker.send(FetchRequest.make([]).session(id, epoch: 8), version: version)
            #expect(closed.errorCode == KafkaCode.fetchSessionIdNotFound)
            #expect(broker.context.fetchSessions.count == 0)
        }
    }

    @Test func aLongPollingIncrementalFetchWakesOnDataInAPartitionItDoesNotList() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("wake", partitions: 3)
            let created = try await broker.send(FetchRequest.make((0..<3).map { ("wake", Int32($0), 0) }).session(0, epoch: 0), version: 12)
            let id = created.sessionId
            #expect(id != 0)
            // Lists nothing, so only the session's partitions can end the wait (30 s, beyond the test's patience).
            async let woken = broker.send(FetchRequest.make([], maxWaitMs: 30_000).session(id, epoch: 1), version: 12)
            // The fetch must be parked before the produce, or the answer would not show that it woke.
            #expect(try await waitUntil(timeout: .seconds(10)) { await broker.replicas.waitingReaders > 0 }, "the fetch never waited")
            try await Self.produce(broker, "wake", 2, Records.numbered(0, count: 2))
            let started = ContinuousClock.now
            let response = try await woken
            #expect(ContinuousClock.now - started < .seconds(15), "woken by the produce, not by max_wait_ms")
            #expect(response.sessionId == id)
            #expect(Self.named(response) == ["wake-2"])
            #expect(try Records.read(response.partition("wake", 2).records).map(\.record) == Records.numbered(0, count: 2))
        }
    }

    /// A produce that lands while a fetch passes over its partitions (after it looked at one, before
    /// it waits) must end the wait, not leave it to `max_wait_ms`.
    @Test func aChangeBetweenAPassAndItsWaitEndsTheWaitAtOnce() async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("between")
            let seen = await broker.replicas.changeCount
            try await Self.produce(broker, "between", 0, Records.numbered(0, count: 1))
            let started = ContinuousClock.now
            let now = await broker.replicas.waitForChange(after: seen, timeout: .seconds(30))
            #expect(now > seen)
            #expect(ContinuousClock.now - started < .seconds(15), "the change before the wait was missed")
        }
    }

    @Test func aFullCacheLeavesNewClientsSessionless() async throws {
        try await InProcessBroker.with(fetchSessionSlots: 1) { broker in
            try await broker.createTopic("slots", partitions: 2)
            let first = try await broker.send(FetchRequest.make([("slots", 0, 0)]).session(0, epoch: 0), version: 12)
            #expect(first.sessionId != 0)
            // As large as the cached session and it just used: no room, so a full answer without a session.
            let second = try await broker.send(FetchRequest.make([("slots", 1, 0)]).session(0, epoch: 0), version: 12)
            #expect(second.errorCode == KafkaCode.none)
            #expect(second.sessionId == 0)
            #expect(Self.named(second) == ["slots-1"])
            // A larger session evicts the smaller one.
            let larger = try await broker.send(FetchRequest.make([("slots", 0, 0), ("slots", 1, 0)]).session(0, epoch: 0), version: 12)
            #expect(larger.sessionId != 0 && larger.sessionId != first.sessionId)
            let evicted = try await broker.send(FetchRequest.make([]).session(first.sessionId, epoch: 1), version: 12)
            #expect(evicted.errorCode == KafkaCode.fetchSessionIdNotFound)
            #expect(try await broker.send(FetchRequest.make([]).session(larger.sessionId, epoch: 1), version: 12).errorCode == KafkaCode.none)
        }
    }

    @Test func fromV13SessionsNamePartitionsByTopicId() async throws {
        try await InProcessBroker.with { broker in
            let id = try await broker.createTopic("ids", partitions: 2)
            try await Self.produce(broker, "ids", 1, Records.numbered(0, count: 1))
            let unknown = KafkaUUID(high: 0x1234, low: 0x5678)
            var request = FetchRequest.make([]).session(0, epoch: 0)
            request.topics = [(id, Int32(0)), (id, 1), (unknown, 0)].map { topicId, index in
                var topic = FetchRequest.FetchTopic()
                topic.topicId = topicId
                var partition = FetchRequest.FetchPartition()
                partition.partition = index
                partition.partitionMaxBytes = 1 << 20
                topic.partitions = [partition]
                return topic
            }
            let full = try await broker.send(request, version: 13)
            #expect(full.sessionId != 0)
            func answer(_ response: FetchResponse, _ topicId: KafkaUUID, _ index: Int32) -> FetchResponse.PartitionData? {
                response.responses.filter { $0.topicId == topicId }.flatMap(\.partitions).first { $0.partitionIndex == index }
            }
            #expect(answer(full, id, 0)?.errorCode == KafkaCode.none)
            #expect(try Records.read(answer(full, id, 1)?.records).count == 1)
            #expect(answer(full, unknown, 0)?.errorCode == KafkaCode.unknownTopicId)

            // Forgotten by topic id; the unknown id keeps reporting its error.
            try await Self.produce(broker, "ids", 1, Records.numbered(1, count: 1))
            var forget = FetchRequest.ForgottenTopic()
            forget.topicId = id
            forget.partitions = [1]
            var incremental = FetchRequest.make([]).session(full.sessionId, epoch: 1)
            incremental.forgottenTopicsData = [forget]
            let next = try await broker.send(incremental, version: 13)
            #expect(next.errorCode == KafkaCode.none)
            #expect(next.responses.map(\.topicId) == [unknown])
            #expect(answer(next, unknown, 0)?.errorCode == KafkaCode.unknownTopicId)

            // The session is one of topic ids: a request naming topics cannot continue it.
            let byName = try await broker.send(FetchRequest.make([]).session(full.sessionId, epoch: 2), version: 12)
            #expect(byName.errorCode == KafkaCode.fetchSessionTopicIdError)
        }
    }
}

extension FetchRequest {
    /// The request with session fields set; `forgetting` lists (topic, partition) to remove from the session.
    func session(_ id: Int32, epoch: Int32, forgetting: [(topic: String, partition: Int32)] = []) -> FetchRequest {
        var request = self
        request.sessionId = id
        request.sessionEpoch = epoch
        request.forgottenTopicsData = forgetting.map { item in
            var topic = FetchRequest.ForgottenTopic()
            topic.topic = item.topic
            topic.partitions = [item.partition]
            return topic
        }
        return request
    }
}
