import BrokerCore
import ClusterMetadata
import ControllerClient
import KafkaProtocol
import Testing

@Suite struct CreateTopicsTests {
    @Test(arguments: Int16(0)...7)
    func createsAtEveryVersion(version: Int16) async throws {
        let fixture = await AdminFixture()
        let name = "orders-v\(version)"
        let response = try wire(
            await fixture.handlers.createTopics(.make([(name, Int32(3))]), version: version), version: version)
        let result = try #require(response.topics.first)
        #expect(response.topics.count == 1)
        #expect(result.name == name)
        #expect(result.errorCode == Code.none)
        let topic = try #require(await fixture.state.topics[name])
        #expect(topic.partitions.count == 3)
        if version >= 1 { #expect(result.errorMessage == nil) }
        if version >= 7 {
            #expect(result.topicId != .zero)
            #expect(result.topicId == topic.topicId)
        } else {
            #expect(result.topicId == .zero)
        }
        if version >= 5 {
            #expect(result.numPartitions == 3)
            #expect(result.replicationFactor == 1)
            let configs = try #require(result.configs)
            #expect(configs.map(\.name) == TopicDefaults.names)
            let retention = try #require(configs.first { $0.name == "retention.ms" })
            #expect(retention.value == "604800000")
            #expect(retention.configSource == 5)
            #expect(retention.readOnly == false)
        } else {
            #expect(result.numPartitions == -1)
        }
    }

    @Test func defaultPartitionsAndConfigSources() async throws {
        let fixture = await AdminFixture(defaultPartitions: 4)
        let request = CreateTopicsRequest.make(
            [("events", -1)], replicationFactor: 3, configs: ["retention.ms": "1000", "cleanup.policy": "compact"])
        let response = try wire(await fixture.handlers.createTopics(request, version: 5), version: 5)
        let result = try #require(response.topics.first)
        #expect(result.errorCode == Code.none)
        #expect(result.numPartitions == 4)
        #expect(result.replicationFactor == 1)
        let configs = Dictionary(uniqueKeysWithValues: (result.configs ?? []).map { ($0.name, $0) })
        #expect(configs["retention.ms"]?.value == "1000")
        #expect(configs["retention.ms"]?.configSource == 1)
        #expect(configs["cleanup.policy"]?.value == "compact")
        #expect(configs["max.message.bytes"]?.configSource == 5)
        #expect(await fixture.state.topics["events"]?.partitions.count == 4)
        #expect(await fixture.state.topics["events"]?.configs == ["retention.ms": "1000", "cleanup.policy": "compact"])
    }

    @Test(arguments: ["", ".", "..", "has space", "slash/name", String(repeating: "x", count: 250)])
    func illegalNamesAreRefused(name: String) async throws {
        let fixture = await AdminFixture()
        let response = try wire(await fixture.handlers.createTopics(.make([(name, Int32(1))]), version: 4), version: 4)
        let result = try #require(response.topics.first)
        #expect(result.errorCode == Code.invalidTopic)
        #expect(result.errorMessage?.contains("illegal") == true)
        #expect(await fixture.state.topics.isEmpty)
        #expect(await fixture.controller.written.isEmpty)
    }

    @Test func badCountsAndConfigsAreRefused() async throws {
        let fixture = await AdminFixture()
        let cases: [(CreateTopicsRequest, Int16)] = [
            (.make([("p0", 0)]), Code.invalidPartitions),
            (.make([("p2", -2)]), Code.invalidPartitions),
            (.make([("r0", 1)], replicationFactor: 0), Code.invalidReplicationFactor),
            (.make([("r2", 1)], replicationFactor: -2), Code.invalidReplicationFactor),
            (.make([("c1", 1)], configs: ["no.such.config": "1"]), Code.invalidConfig),
            (.make([("c2", 1)], configs: ["retention.ms": "soon"]), Code.invalidConfig),
            (.make([("c3", 1)], configs: ["cleanup.policy": "forever"]), Code.invalidConfig),
            (.make([("c4", 1)], configs: ["retention.ms": nil]), Code.invalidConfig),
        ]
        for (request, expected) in cases {
            let response = try wire(await fixture.handlers.createTopics(request, version: 7), version: 7)
            #expect(response.topics.map(\.errorCode) == [expected], "\(request.topics[0].name)")
            #expect(response.topics.first?.errorMessage?.isEmpty == false)
            #expect(response.topics.first?.numPartitions == -1)
        }
        var duplicateKey = CreateTopicsRequest.make([("dk", 1)], configs: ["retention.ms": "1"])
        duplicateKey.topics[0].configs.append(duplicateKey.topics[0].configs[0])
        let response = await fixture.handlers.createTopics(duplicateKey, version: 7)
        #expect(response.topics.map(\.errorCode) == [Code.invalidRequest])
        #expect(await fixture.state.topics.isEmpty)
    }

    @Test func validateOnlyCreatesNothing() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("existing")
        let request = CreateTopicsRequest.make([("fresh", 5), ("existing", 1)], configs: ["retention.ms": "60000"], validateOnly: true)
        let response = try wire(await fixture.handlers.createTopics(request, version: 7), version: 7)
        #expect(response.topics.map(\.errorCode) == [Code.none, Code.topicAlreadyExists])
        #expect(response.topics[0].numPartitions == 5)
        #expect(response.topics[0].topicId == .zero)
        #expect(await fixture.state.topics["fresh"] == nil)
        #expect(await fixture.controller.written.isEmpty)
        // A config the controller would refuse is refused in a dry run too.
        let bad = CreateTopicsRequest.make([("fresh", 1)], configs: ["segment.bytes": "1"], validateOnly: true)
        #expect(await fixture.handlers.createTopics(bad, version: 7).topics.map(\.errorCode) == [Code.invalidConfig])
    }

    @Test func duplicateNamesInOneRequest() async throws {
        let fixture = await AdminFixture()
        let request = CreateTopicsRequest.make([("dup", 1), ("solo", 1), ("dup", 2)])
        let response = try wire(await fixture.handlers.createTopics(request, version: 2), version: 2)
        #expect(response.topics.map(\.name) == ["solo", "dup"])
        #expect(response.topics.map(\.errorCode) == [Code.none, Code.invalidRequest])
        #expect(response.topics[1].errorMessage == "Duplicate topic name.")
        #expect(await fixture.state.topicNames == ["solo"])
    }

    @Test func existingTopicAndNameCollision() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("my.topic")
        let response = await fixture.handlers.createTopics(.make([("my.topic", 1), ("my_topic", 1)]), version: 3)
        #expect(response.topics.map(\.errorCode) == [Code.topicAlreadyExists, Code.invalidTopic])
        #expect(response.topics.allSatisfy { $0.errorMessage?.isEmpty == false })
    }

    @Test func manualAssignments() async throws {
        let fixture = await AdminFixture()
        func request(_ name: String, _ assignments: [(Int32, [Int32])], partitions: Int32 = -1) -> CreateTopicsRequest {
            var request = CreateTopicsRequest.make([(name, partitions)])
            request.topics[0].assignments = assignments.map { index, brokers in
                var assignment = CreateTopicsRequest.CreatableReplicaAssignment()
                assignment.partitionIndex = index
                assignment.brokerIds = brokers
                return assignment
            }
            return request
        }
        let accepted = await fixture.handlers.createTopics(request("placed", [(1, [2]), (0, [1])]), version: 5)
        #expect(accepted.topics.map(\.errorCode) == [Code.none])
        #expect(accepted.topics.first?.numPartitions == 2)
        #expect(await fixture.state.topics["placed"]?.partitions.count == 2)

        let both = await fixture.handlers.createTopics(request("both", [(0, [1])], partitions: 1), version: 5)
        #expect(both.topics.map(\.errorCode) == [Code.invalidRequest])
        let unknownBroker = await fixture.handlers.createTopics(request("nobroker", [(0, [9])]), version: 5)
        #expect(unknownBroker.topics.map(\.errorCode) == [Code.invalidReplicaAssignment])
        let walWriter = await fixture.handlers.createTopics(request("notbroker", [(0, [7])]), version: 5)
        #expect(walWriter.topics.map(\.errorCode) == [Code.invalidReplicaAssignment])
        let gap = await fixture.handlers.createTopics(request("gap", [(0, [1]), (2, [2])]), version: 5)
        #expect(gap.topics.map(\.errorCode) == [Code.invalidReplicaAssignment])
        let repeated = await fixture.handlers.createTopics(request("repeat", [(0, [1, 1])]), version: 5)
        #expect(repeated.topics.map(\.errorCode) == [Code.invalidReplicaAssignment])
        #expect(await fixture.state.topicNames == ["placed"])
    }

    @Test func answersOnlyOnceTheImageShowsTheTopic() async throws {
        let fixture = await AdminFixture()
        await fixture.controller.setLagging(true)
        let response = await fixture.handlers.createTopics(.make([("visible", 2)]), version: 7)
        #expect(response.topics.map(\.errorCode) == [Code.none])
        let state = await fixture.state
        #expect(state.topics["visible"]?.partitions.count == 2)
        #expect(await fixture.controller.waitedFor == [state.lastAppliedIndex])
        #expect(response.topics.first?.topicId == state.topics["visible"]?.topicId)

        // A deleted topic is gone from the image by the time the answer arrives, too.
        var delete = DeleteTopicsRequest()
        delete.topicNames = ["visible"]
        delete.timeoutMs = 1000
        #expect(await fixture.handlers.deleteTopics(delete, version: 5).responses.map(\.errorCode) == [Code.none])
        #expect(await fixture.state.topics["visible"] == nil)
    }

    @Test func controllerFailuresAreRetriableErrors() async throws {
        let fixture = await AdminFixture()
        await fixture.controller.failWith(.unavailable("connection refused"))
        let timedOut = try wire(await fixture.handlers.createTopics(.make([("a", 1), ("b", 1)]), version: 7), version: 7)
        #expect(timedOut.topics.map(\.errorCode) == [Code.requestTimedOut, Code.requestTimedOut])
        #expect(timedOut.topics.allSatisfy { $0.topicId == .zero && $0.numPartitions == -1 })
        await fixture.controller.failWith(.server(code: Code.notController, message: "not the leader"))
        let notController = await fixture.handlers.createTopics(.make([("a", 1)]), version: 4)
        #expect(notController.topics.map(\.errorCode) == [Code.notController])
        #expect(await fixture.state.topics.isEmpty)
    }
}

@Suite struct DeleteTopicsTests {
    @Test(arguments: Int16(0)...5)
    func deletesByName(version: Int16) async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("gone")
        var request = DeleteTopicsRequest()
        request.topicNames = ["gone", "never"]
        request.timeoutMs = 1000
        let response = try wire(await fixture.handlers.deleteTopics(request, version: version), version: version)
        #expect(response.responses.map(\.name) == ["gone", "never"])
        #expect(response.responses.map(\.errorCode) == [Code.none, Code.unknownTopicOrPartition])
        if version >= 5 {
            #expect(response.responses[0].errorMessage == nil)
            #expect(response.responses[1].errorMessage?.isEmpty == false)
        }
        #expect(await fixture.state.topics["gone"] == nil)
    }

    @Test func deletesByIdAtV6() async throws {
        let fixture = await AdminFixture()
        let id = await fixture.seed("by-id")
        _ = await fixture.seed("by-name")
        func state(name: String?, id: KafkaUUID) -> DeleteTopicsRequest.DeleteTopicState {
            var topic = DeleteTopicsRequest.DeleteTopicState()
            topic.name = name
            topic.topicId = id
            return topic
        }
        let unknownId = KafkaUUID(high: 0x4000, low: 0x8000_0000_0000_0042)
        var request = DeleteTopicsRequest()
        request.topics = [
            state(name: nil, id: id), state(name: "by-name", id: .zero), state(name: nil, id: unknownId),
            state(name: "x", id: id), state(name: nil, id: .zero),
        ]
        let response = try wire(await fixture.handlers.deleteTopics(request, version: 6), version: 6)
        #expect(response.responses.map(\.errorCode) == [Code.none, Code.none, Code.unknownTopicId, Code.invalidRequest, Code.invalidRequest])
        #expect(response.responses[0].name == "by-id")
        #expect(response.responses[0].topicId == id)
        #expect(response.responses[2].name == nil)
        #expect(response.responses[2].topicId == unknownId)
        #expect(await fixture.state.topics.isEmpty)
    }

    @Test func duplicatesAndInternalTopics() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("twice")
        _ = await fixture.seed("__consumer_offsets", partitions: 3, internal: true)
        var request = DeleteTopicsRequest()
        request.topicNames = ["twice", "__consumer_offsets", "twice"]
        let response = try wire(await fixture.handlers.deleteTopics(request, version: 4), version: 4)
        #expect(response.responses.map(\.name) == ["__consumer_offsets", "twice"])
        #expect(response.responses.map(\.errorCode) == [Code.invalidRequest, Code.invalidRequest])
        #expect(await fixture.state.topicNames == ["__consumer_offsets", "twice"])
    }

    @Test func controllerUnreachable() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("kept")
        await fixture.controller.failWith(.unavailable("down"))
        var request = DeleteTopicsRequest()
        request.topicNames = ["kept"]
        let response = try wire(await fixture.handlers.deleteTopics(request, version: 5), version: 5)
        #expect(response.responses.map(\.errorCode) == [Code.requestTimedOut])
        #expect(await fixture.state.topics["kept"] != nil)
    }
}

@Suite struct CreatePartitionsTests {
    static func request(_ changes: [(String, Int32)], validateOnly: Bool = false) -> CreatePartitionsRequest {
        var request = CreatePartitionsRequest()
        request.timeoutMs = 1000
        request.validateOnly = validateOnly
        request.topics = changes.map { name, count in
            var topic = CreatePartitionsRequest.CreatePartitionsTopic()
            topic.name = name
            topic.count = count
            topic.assignments = nil
            return topic
        }
        return request
    }

    @Test(arguments: Int16(0)...3)
    func growsAndRefusesShrinking(version: Int16) async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("grow", partitions: 1)
        _ = await fixture.seed("same", partitions: 2)
        _ = await fixture.seed("shrink", partitions: 4)
        let request = Self.request([("grow", 3), ("same", 2), ("shrink", 2), ("missing", 5)])
        let response = try wire(await fixture.handlers.createPartitions(request, version: version), version: version)
        #expect(response.results.map(\.errorCode) == [Code.none, Code.invalidPartitions, Code.invalidPartitions, Code.unknownTopicOrPartition])
        #expect(response.results[0].errorMessage == nil)
        #expect(response.results[1].errorMessage == "Topic already has 2 partition(s).")
        let state = await fixture.state
        #expect(state.topics["grow"]?.partitions.count == 3)
        #expect(state.topics["shrink"]?.partitions.count == 4)
    }

    @Test func validateOnlyDuplicatesAndAssignments() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t", partitions: 1)
        let dryRun = await fixture.handlers.createPartitions(Self.request([("t", 8)], validateOnly: true), version: 3)
        #expect(dryRun.results.map(\.errorCode) == [Code.none])
        #expect(await fixture.state.topics["t"]?.partitions.count == 1)
        #expect(await fixture.controller.written.isEmpty)

        let duplicate = await fixture.handlers.createPartitions(Self.request([("t", 2), ("t", 3)]), version: 3)
        #expect(duplicate.results.map(\.errorCode) == [Code.invalidRequest])

        var assigned = Self.request([("t", 3)])
        var one = CreatePartitionsRequest.CreatePartitionsAssignment()
        one.brokerIds = [2]
        assigned.topics[0].assignments = [one]
        let tooFew = await fixture.handlers.createPartitions(assigned, version: 1)
        #expect(tooFew.results.map(\.errorCode) == [Code.invalidReplicaAssignment])
        assigned.topics[0].assignments = [one, one]
        let placed = await fixture.handlers.createPartitions(assigned, version: 1)
        #expect(placed.results.map(\.errorCode) == [Code.none])
        #expect(await fixture.state.topics["t"]?.partitions.count == 3)
    }
}

@Suite struct AutoCreateTests {
    @Test func createsMissingTopicsWithDefaults() async throws {
        let fixture = await AdminFixture(defaultPartitions: 3)
        _ = await fixture.seed("present")
        let codes = await fixture.handlers.autoCreate(topics: ["fresh", "present", "bad name", "fresh"])
        #expect(codes == ["fresh": Code.none, "present": Code.none, "bad name": Code.invalidTopic])
        let state = await fixture.state
        #expect(state.topics["fresh"]?.partitions.count == 3)
        #expect(state.topics["fresh"]?.topicId != .zero)
        #expect(state.topics["bad name"] == nil)
    }

    @Test func internalTopicsGetKafkaSettings() async throws {
        let fixture = await AdminFixture(autoCreate: false)
        let codes = await fixture.handlers.autoCreate(topics: ["__consumer_offsets", "plain"])
        #expect(codes == ["__consumer_offsets": Code.none, "plain": Code.unknownTopicOrPartition])
        let offsets = try #require(await fixture.state.topics["__consumer_offsets"])
        #expect(offsets.partitions.count == 50)
        #expect(offsets.isInternal)
        #expect(offsets.configs["cleanup.policy"] == "compact")
        #expect(await fixture.state.topics["plain"] == nil)
    }

    @Test func controllerFailureIsRetriable() async throws {
        let fixture = await AdminFixture()
        await fixture.controller.failWith(.unavailable("down"))
        #expect(await fixture.handlers.autoCreate(topics: ["t"]) == ["t": Code.unknownTopicOrPartition])
    }
}
