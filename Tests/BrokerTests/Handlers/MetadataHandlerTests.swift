import KafkaProtocol
import Testing

@testable import BrokerCore

/// Metadata against an in-process broker, at v1 (auto-creation implied), v4 (clients may decline it),
/// v8 (the last non-flexible), v9 (the first flexible) and v12 (topic ids, what current clients send).
@Suite(.timeLimit(.minutes(2))) struct MetadataHandlerTests {
    static let versions: [Int16] = [1, 4, 8, 9, 12]

    @Test(arguments: versions) func listsThisBrokerAndTheTopicsItLeads(_ version: Int16) async throws {
        try await InProcessBroker.with { broker in
            let id = try await broker.createTopic("catalog", partitions: 3)
            try await broker.createTopic("other")
            let response = try await broker.send(MetadataRequest.make(["catalog"]), version: version)
            #expect(response.brokers.count == 1)
            let listed = try #require(response.brokers.first)
            #expect(listed.nodeId == InProcessBroker.nodeId)
            #expect(listed.host == InProcessBroker.host)
            #expect(listed.port == InProcessBroker.port)
            #expect(listed.rack == "a")
            #expect(response.controllerId == InProcessBroker.nodeId)
            #expect(response.clusterId == (version >= 2 ? "in-process-cluster" : nil))
            #expect(response.topics.map(\.name) == ["catalog"])

            let topic = try response.topic("catalog")
            #expect(topic.errorCode == KafkaCode.none)
            #expect(topic.isInternal == false)
            #expect(topic.topicId == (version >= 10 ? id : .zero))
            #expect(topic.partitions.map(\.partitionIndex) == [0, 1, 2])
            for partition in topic.partitions {
                #expect(partition.errorCode == KafkaCode.none)
                #expect(partition.leaderId == InProcessBroker.nodeId)
                #expect(partition.leaderEpoch == (version >= 7 ? 0 : -1), "leader epochs exist from v7 on")
                #expect(partition.replicaNodes == [InProcessBroker.nodeId])
                #expect(partition.isrNodes == [InProcessBroker.nodeId])
            }

            // Null asks for every topic.
            let all = try await broker.send(MetadataRequest.make(nil), version: version)
            #expect(Set(all.topics.compactMap(\.name)) == ["catalog", "other"])
        }
    }

    @Test func leadersOfOtherBrokersAreListedWithThem() async throws {
        try await InProcessBroker.with { broker in
            try await broker.register(node: 2, zone: "b", listener: "broker-2.floe.test:19093")
            try await broker.createTopic("spread", partitions: 4)
            let state = try #require(await broker.metadata.state.topics["spread"])
            let response = try await broker.send(MetadataRequest.make(["spread"]), version: 12)
            #expect(response.brokers.map(\.nodeId).sorted() == [1, 2])
            let second = try #require(response.brokers.first { $0.nodeId == 2 })
            #expect(second.host == "broker-2.floe.test")
            #expect(second.port == 19093)
            #expect(second.rack == "b")
            let partitions = try response.topic("spread").partitions
            #expect(partitions.map(\.leaderId) == state.partitions.map(\.leader))
            #expect(Set(partitions.map(\.leaderId)) == [1, 2], "placement spreads four partitions over both brokers")
        }
    }

    @Test(arguments: versions) func unknownTopicsAreNotCreatedWhenTheBrokerDisallowsIt(_ version: Int16) async throws {
        try await InProcessBroker.with(autoCreateTopics: false) { broker in
            let response = try await broker.send(MetadataRequest.make(["nowhere"]), version: version)
            let topic = try response.topic("nowhere")
            #expect(topic.errorCode == KafkaCode.unknownTopicOrPartition)
            #expect(topic.partitions.isEmpty)
            #expect(await broker.metadata.state.topics["nowhere"] == nil)
        }
    }

    @Test(arguments: versions.filter { $0 >= 4 }) func clientsMayDeclineAutoCreation(_ version: Int16) async throws {
        try await InProcessBroker.with(autoCreateTopics: true) { broker in
            let response = try await broker.send(MetadataRequest.make(["declined"], allowAutoTopicCreation: false), version: version)
            #expect(try response.topic("declined").errorCode == KafkaCode.unknownTopicOrPartition)
            #expect(await broker.metadata.state.topics["declined"] == nil)
        }
    }

    @Test(arguments: [Int16(1), 12]) func autoCreatedTopicsAreLedHereAndWritable(_ version: Int16) async throws {
        try await InProcessBroker.with(autoCreateTopics: true) { broker in
            let response = try await broker.send(MetadataRequest.make(["fresh"]), version: version)
            let topic = try response.topic("fresh")
            #expect(topic.errorCode == KafkaCode.none)
            #expect(topic.partitions.map(\.partitionIndex) == [0, 1], "num.partitions of the broker")
            #expect(topic.partitions.map(\.leaderId) == [InProcessBroker.nodeId, InProcessBroker.nodeId])

            try await broker.waitUntilLed("fresh")
            let produced = try await broker.send(
                ProduceRequest.make([("fresh", 1, try Records.batch(Records.numbered(0, count: 1)))]), version: 9)
            #expect(try produced.partition("fresh", 1).errorCode == KafkaCode.none)
            #expect(try produced.partition("fresh", 1).baseOffset == 0)
        }
    }

    @Test func invalidTopicNamesAreRefusedNotCreated() async throws {
        try await InProcessBroker.with(autoCreateTopics: true) { broker in
            let response = try await broker.send(MetadataRequest.make(["bad/name"]), version: 12)
            #expect(try response.topic("bad/name").errorCode == KafkaCode.invalidTopic)
            #expect(await broker.metadata.state.topics.isEmpty)
        }
    }

    @Test func topicsAskedForByIdAreAnsweredUnderTheirNames() async throws {
        try await InProcessBroker.with { broker in
            let id = try await broker.createTopic("by-id", partitions: 2)
            var request = MetadataRequest.make([])
            var known = MetadataRequest.MetadataRequestTopic()
            known.name = nil
            known.topicId = id
            var unknown = MetadataRequest.MetadataRequestTopic()
            unknown.name = nil
            unknown.topicId = KafkaUUID(high: 0x7777, low: 0x1)
            request.topics = [known, unknown]
            let response = try await broker.send(request, version: 12)
            #expect(response.topics.count == 2)
            let topic = try response.topic("by-id")
            #expect(topic.errorCode == KafkaCode.none)
            #expect(topic.topicId == id)
            #expect(topic.partitions.map(\.partitionIndex) == [0, 1])
            let missing = try #require(response.topics.first { $0.topicId == unknown.topicId })
            #expect(missing.name == nil)
            #expect(missing.errorCode == KafkaErrorCode.unknownTopicId.rawValue)
            #expect(missing.partitions.isEmpty)
            #expect(await broker.metadata.state.topics.count == 1, "an unknown id creates nothing")
        }
    }
}
