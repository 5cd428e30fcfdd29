import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import NIOCore
import ObjectStorage
import Testing

@testable import BrokerCore

/// Zone routing in one broker (zone "a", node 1) with a second broker registered in zone "b": the
/// zone view of Metadata, and the leader's side of a routed produce (claims of routed objects).
@Suite struct ZoneRoutingHandlerTests {
    @Test func clientsSeeTheirZonesBrokersLeadingEveryPartition() async throws {
        try await InProcessBroker.with(zoneRouting: true) { broker in
            try await broker.register(node: 2, zone: "b", listener: "broker-2.floe.test:19093")
            try await broker.createTopic("spread", partitions: 4)
            let state = try #require(await broker.metadata.state.topics["spread"])
            #expect(Set(state.partitions.map(\.leader)) == [1, 2], "placement spreads four partitions over both zones")
            // No tag: the client is in this broker's zone.
            let local = try await broker.send(MetadataRequest.make(["spread"]), version: 12)
            #expect(local.brokers.map(\.nodeId) == [1])
            #expect(try local.topic("spread").partitions.map(\.leaderId) == [1, 1, 1, 1])
            #expect(try local.topic("spread").partitions.map(\.leaderEpoch) == state.partitions.map(\.leaderEpoch))
            // A client of zone b that reached this broker keeps its own zone's view.
            let remote = try await broker.send(MetadataRequest.make(["spread"]), version: 12, clientId: "app,floe_zone=b")
            #expect(remote.brokers.map(\.nodeId) == [2])
            #expect(remote.brokers.first?.rack == "b")
            #expect(try remote.topic("spread").partitions.map(\.leaderId) == [2, 2, 2, 2])
            // A zone without brokers sees the real leaders.
            let elsewhere = try await broker.send(MetadataRequest.make(["spread"]), version: 12, clientId: "floe_zone=z")
            #expect(Set(elsewhere.brokers.map(\.nodeId)) == [1, 2])
            #expect(try elsewhere.topic("spread").partitions.map(\.leaderId) == state.partitions.map(\.leader))
        }
    }

    @Test func withoutZoneRoutingEveryClientSeesTheRealLeaders() async throws {
        try await InProcessBroker.with { broker in
            try await broker.register(node: 2, zone: "b", listener: "broker-2.floe.test:19093")
            try await broker.createTopic("spread", partitions: 4)
            let state = try #require(await broker.metadata.state.topics["spread"])
            let response = try await broker.send(MetadataRequest.make(["spread"]), version: 12, clientId: "app,floe_zone=b")
            #expect(Set(response.brokers.map(\.nodeId)) == [1, 2])
            #expect(try response.topic("spread").partitions.map(\.leaderId) == state.partitions.map(\.leader))
        }
    }

    @Test func aClaimAppendsTheRoutedBytesOnceAtTheLeader() async throws {
        try await InProcessBroker.with(zoneRouting: true) { broker in
            try await broker.createTopic("routed", partitions: 2)
            let first = try Records.batch(Records.numbered(0, count: 3))
            let second = try Records.batch(Records.numbered(10, count: 2))
            let claim = try await Routed.write(broker, id: 900, [("routed", 0, first), ("routed", 1, second), ("routed", 0, first)])
            let answer = try await broker.send(claim, version: 0)
            #expect(answer.errorCode == 0)
            let results = answer.topics.flatMap(\.partitions)
            #expect(results.map(\.errorCode) == [0, 0, 0])
            #expect(results.map(\.baseOffset) == [0, 0, 3], "offsets are the leader's, in claim order")
            // The routing broker retries after losing the answer: the same answer, nothing appended twice.
            let repeated = try await broker.send(claim, version: 0)
            #expect(repeated.topics.flatMap(\.partitions).map(\.baseOffset) == [0, 0, 3])
            #expect(try await Routed.latest(broker, "routed", 0) == 6)
            #expect(try await Routed.latest(broker, "routed", 1) == 2)
            let fetched = try await broker.send(FetchRequest.make([("routed", 0, 0)]), version: 12)
            #expect(try Records.read(fetched.partition("routed", 0).records).map(\.record) == Records.numbered(0, count: 3) + Records.numbered(0, count: 3))
        }
    }

    @Test func aClaimOfAMissingObjectAppendsNothing() async throws {
        try await InProcessBroker.with(zoneRouting: true) { broker in
            try await broker.createTopic("routed")
            var claim = try await Routed.write(broker, id: 901, [("routed", 0, try Records.batch(Records.numbered(0, count: 1)))])
            claim.objectId = 902
            claim.objectKey = ObjectKey.make(id: 902, kind: .routed)
            let answer = try await broker.send(claim, version: 0)
            #expect(answer.errorCode == KafkaErrorCode.invalidRequest.rawValue)
            #expect(answer.errorMessage?.contains("does not exist") == true)
            // A key that is not the routed object's is refused before any read.
            claim.objectKey = ObjectKey.make(id: 902, kind: .streamSet)
            let wrongKind = try await broker.send(claim, version: 0)
            #expect(wrongKind.errorCode == KafkaErrorCode.invalidRequest.rawValue)
            #expect(try await Routed.latest(broker, "routed", 0) == 0)
        }
    }

    @Test func aCorruptRoutedObjectAppendsNothingOfIt() async throws {
        try await InProcessBroker.with(zoneRouting: true) { broker in
            try await broker.createTopic("routed", partitions: 2)
            let good = try Records.batch(Records.numbered(0, count: 2))
            var claim = try await Routed.write(broker, id: 903, [("routed", 0, good), ("routed", 1, good)])
            // The second range's bytes changed after the CRC was taken: the whole claim is refused.
            var object = try await broker.store.get(claim.objectKey)
            let at = object.readerIndex + good.readableBytes + 70
            object.setInteger((object.getInteger(at: at, as: UInt8.self) ?? 0) ^ 0xFF, at: at)
            try await broker.store.put(claim.objectKey, object)
            let answer = try await broker.send(claim, version: 0)
            #expect(answer.errorCode == KafkaErrorCode.corruptMessage.rawValue)
            #expect(try await Routed.latest(broker, "routed", 0) == 0)
            #expect(try await Routed.latest(broker, "routed", 1) == 0)
            // Bytes whose CRC matches but that are not a valid batch are refused like a Produce.
            var garbage = ByteBuffer()
            garbage.writeRepeatingByte(7, count: 80)
            claim = try await Routed.write(broker, id: 904, [("routed", 0, garbage)])
            let invalid = try await broker.send(claim, version: 0)
            let result = try #require(invalid.topics.first?.partitions.first)
            #expect(result.errorCode != 0)
            #expect(try await Routed.latest(broker, "routed", 0) == 0)
        }
    }

    @Test func aClaimFromAFencedProducerEpochIsRefused() async throws {
        try await InProcessBroker.with(zoneRouting: true) { broker in
            try await broker.createTopic("routed")
            let current = try Routed.idempotentBatch(producerId: 7, epoch: 3, sequence: 0)
            let produced = try await broker.send(ProduceRequest.make([("routed", 0, current)]), version: 9)
            #expect(try produced.partition("routed", 0).errorCode == KafkaCode.none)
            let fenced = try Routed.idempotentBatch(producerId: 7, epoch: 2, sequence: 1)
            let claim = try await Routed.write(broker, id: 905, [("routed", 0, fenced)])
            let answer = try await broker.send(claim, version: 0)
            #expect(answer.topics.first?.partitions.first?.errorCode == KafkaErrorCode.invalidProducerEpoch.rawValue)
            #expect(try await Routed.latest(broker, "routed", 0) == 1)
        }
    }

    @Test func aClaimAtAnotherLeaderEpochAppendsNothing() async throws {
        try await InProcessBroker.with(zoneRouting: true) { broker in
            try await broker.createTopic("routed")
            let epoch = try #require(await broker.metadata.state.topics["routed"]?.partitions.first?.leaderEpoch)
            var claim = try await Routed.write(broker, id: 906, [("routed", 0, try Records.batch(Records.numbered(0, count: 1)))])
            // The routing broker saw a newer epoch than this leader: it must not append as the old one.
            claim.topics[0].partitions[0].leaderEpoch = epoch + 1
            let answer = try await broker.send(claim, version: 0)
            #expect(answer.topics.first?.partitions.first?.errorCode == KafkaErrorCode.unknownLeaderEpoch.rawValue)
            #expect(try await Routed.latest(broker, "routed", 0) == 0)
        }
    }
}

/// Routed objects as a routing broker writes them, and the claims naming their ranges.
enum Routed {
    static func write(_ broker: InProcessBroker, id: Int64, _ parts: [(topic: String, partition: Int32, records: ByteBuffer)]) async throws -> RoutedClaimRequest {
        var object = ByteBuffer()
        var request = RoutedClaimRequest()
        request.objectId = id
        request.objectKey = ObjectKey.make(id: UInt64(id), kind: .routed)
        request.sourceZone = "b"
        for part in parts {
            var claimed = RoutedClaimRequest.ClaimPartition()
            claimed.index = part.partition
            claimed.position = Int64(object.writerIndex)
            claimed.length = Int32(part.records.readableBytes)
            claimed.crc = Int32(bitPattern: CRC32C.checksum(part.records))
            var records = part.records
            object.writeBuffer(&records)
            if let last = request.topics.indices.last, request.topics[last].name == part.topic {
                request.topics[last].partitions.append(claimed)
            } else {
                var topic = RoutedClaimRequest.ClaimTopic()
                topic.name = part.topic
                topic.partitions = [claimed]
                request.topics.append(topic)
            }
        }
        try await broker.store.put(request.objectKey, object)
        return request
    }

    static func latest(_ broker: InProcessBroker, _ topic: String, _ partition: Int32) async throws -> Int64 {
        let response = try await broker.send(ListOffsetsRequest.make([(topic, partition, -1)]), version: 7)
        return try response.partition(topic, partition).offset
    }

    static func idempotentBatch(producerId: Int64, epoch: Int16, sequence: Int32) throws -> ByteBuffer {
        var builder = RecordBatchBuilder(producerId: producerId, producerEpoch: epoch, baseSequence: sequence)
        try builder.append(timestamp: 1_000, key: ByteBuffer(string: "k"), value: ByteBuffer(string: "v"))
        return try builder.build().bytes
    }
}
