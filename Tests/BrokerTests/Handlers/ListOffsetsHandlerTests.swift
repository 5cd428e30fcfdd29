import KafkaProtocol
import Testing

@testable import BrokerCore

/// ListOffsets against an in-process broker: v1 (no leader epochs), v5 (the last non-flexible) and
/// the flexible v7 (which adds the max-timestamp lookup).
@Suite(.timeLimit(.minutes(2))) struct ListOffsetsHandlerTests {
    static let versions: [Int16] = [1, 5, 7]
    static let earliest: Int64 = -2
    static let latest: Int64 = -1
    static let maxTimestamp: Int64 = -3

    @Test(arguments: versions) func earliestAndLatestFollowTheLog(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("offsets")
            let empty = try await broker.send(
                ListOffsetsRequest.make([("offsets", 0, Self.earliest), ("offsets", 0, Self.latest)]), version: version)
            #expect(empty.topics.flatMap(\.partitions).map(\.offset) == [0, 0])

            let produced = try await broker.send(
                ProduceRequest.make([("offsets", 0, try Records.batch(Records.numbered(0, count: 5)))]), version: 9)
            #expect(try produced.partition("offsets", 0).errorCode == KafkaCode.none)
            let first = try await broker.send(ListOffsetsRequest.make([("offsets", 0, Self.earliest)]), version: version)
            let last = try await broker.send(ListOffsetsRequest.make([("offsets", 0, Self.latest)]), version: version)
            for answer in [try first.partition("offsets", 0), try last.partition("offsets", 0)] {
                #expect(answer.errorCode == KafkaCode.none)
                #expect(answer.timestamp == -1)
                #expect(answer.leaderEpoch == (version >= 4 ? 0 : -1), "leader epochs exist from v4 on")
            }
            #expect(try first.partition("offsets", 0).offset == 0)
            #expect(try last.partition("offsets", 0).offset == 5)
        }
    }

    @Test(arguments: versions) func timestampsFindTheFirstRecordAtOrAfterThem(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("times")
            // Offsets 0-2 at 1000-1002, offsets 3-4 at 2000-2001.
            for (first, count, timestamp) in [(0, 3, Int64(1_000)), (3, 2, 2_000)] {
                let response = try await broker.send(
                    ProduceRequest.make([("times", 0, try Records.batch(Records.numbered(first, count: count, timestamp: timestamp)))]),
                    version: 9)
                #expect(try response.partition("times", 0).baseOffset == Int64(first))
            }
            let lookups: [(timestamp: Int64, offset: Int64, found: Int64)] = [
                (0, 0, 1_000), (1_001, 1, 1_001), (1_500, 3, 2_000), (2_001, 4, 2_001), (3_000, -1, -1),
            ]
            for lookup in lookups {
                let response = try await broker.send(ListOffsetsRequest.make([("times", 0, lookup.timestamp)]), version: version)
                let answer = try response.partition("times", 0)
                #expect(answer.errorCode == KafkaCode.none, "timestamp \(lookup.timestamp)")
                #expect(answer.offset == lookup.offset, "timestamp \(lookup.timestamp)")
                #expect(answer.timestamp == lookup.found, "timestamp \(lookup.timestamp)")
            }
            if version >= 7 {
                let newest = try await broker.send(ListOffsetsRequest.make([("times", 0, Self.maxTimestamp)]), version: version)
                #expect(try newest.partition("times", 0).offset == 4)
                #expect(try newest.partition("times", 0).timestamp == 2_001)
            }
            let invalid = try await broker.send(ListOffsetsRequest.make([("times", 0, -7)]), version: version)
            #expect(try invalid.partition("times", 0).errorCode == KafkaCode.invalidRequest)
        }
    }

    @Test(arguments: versions) func unknownPartitionsAndNewerEpochsAreReported(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            try await broker.createTopic("listed")
            let response = try await broker.send(
                ListOffsetsRequest.make([("unlisted", 0, Self.latest), ("listed", 1, Self.latest), ("listed", 0, Self.latest)]),
                version: version)
            for (topic, index) in [("unlisted", Int32(0)), ("listed", 1)] {
                let answer = try response.partition(topic, index)
                #expect(answer.errorCode == KafkaCode.unknownTopicOrPartition, "\(topic)-\(index)")
                #expect(answer.offset == -1)
                #expect(answer.leaderEpoch == -1)
            }
            #expect(try response.partition("listed", 0).errorCode == KafkaCode.none)

            // The client's leader epoch is only sent, and checked, from v4 on.
            let ahead = try await broker.send(ListOffsetsRequest.make([("listed", 0, Self.latest)], currentLeaderEpoch: 4), version: version)
            #expect(try ahead.partition("listed", 0).errorCode == (version >= 4 ? KafkaCode.unknownLeaderEpoch : KafkaCode.none))
        }
    }
}
