import BrokerCore
import ClusterMetadata
import KafkaProtocol
import Testing

@Suite struct TopicDefaultsTests {
    @Test func everyDescribedConfigIsOneFloeAccepts() {
        let settings = BrokerSettings(nodeId: 1, zone: "a", advertisedHost: "h", advertisedPort: 1)
        #expect(TopicDefaults.names == TopicDefaults.names.sorted())
        #expect(TopicDefaults.names.count == 25)
        for name in TopicDefaults.names {
            #expect(TopicConfig.isKnown(name), "\(name)")
            let value = TopicDefaults.value(of: name, in: [:], settings: settings)
            #expect(value != nil)
            #expect(TopicConfig.validate(key: name, value: value ?? "") == nil, "default of \(name)")
        }
    }

    @Test func topicSettingThenBrokerSettingThenKafkaDefault() {
        let settings = BrokerSettings(
            nodeId: 1, zone: "a", advertisedHost: "h", advertisedPort: 1, messageMaxBytes: 2_000_000,
            messageTimestampType: "LogAppendTime")
        #expect(TopicDefaults.value(of: "retention.ms", in: [:], settings: settings) == "604800000")
        #expect(TopicDefaults.value(of: "cleanup.policy", in: [:], settings: settings) == "delete")
        #expect(TopicDefaults.value(of: "max.message.bytes", in: [:], settings: settings) == "2000000")
        #expect(TopicDefaults.maxMessageBytes(in: [:], settings: settings) == 2_000_000)
        #expect(TopicDefaults.maxMessageBytes(in: ["max.message.bytes": "512"], settings: settings) == 512)
        #expect(TopicDefaults.usesLogAppendTime(in: [:], settings: settings))
        #expect(!TopicDefaults.usesLogAppendTime(in: ["message.timestamp.type": "CreateTime"], settings: settings))
        #expect(TopicDefaults.value(of: "no.such.key", in: [:], settings: settings) == nil)
    }
}

@Suite struct DescribeConfigsTests {
    @Test(arguments: Int16(0)...4)
    func describesTopicAtEveryVersion(version: Int16) async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t", configs: ["retention.ms": "1000"])
        let request = DescribeConfigsRequest.make(2, "t", synonyms: version >= 1, documentation: version >= 3)
        let response = try wire(await fixture.handlers.describeConfigs(request, version: version), version: version)
        let result = try #require(response.results.first)
        #expect(result.errorCode == Code.none)
        #expect(result.resourceType == 2)
        #expect(result.resourceName == "t")
        #expect(result.configs.map(\.name) == TopicDefaults.names)
        #expect(result.values["retention.ms"] == "1000")
        #expect(result.values["cleanup.policy"] == "delete")
        #expect(result.values["max.message.bytes"] == "1048588")
        #expect(result.values["message.timestamp.type"] == "CreateTime")
        #expect(result.values["segment.bytes"] == "1073741824")
        let retention = try #require(result.entry("retention.ms"))
        let cleanup = try #require(result.entry("cleanup.policy"))
        #expect(result.configs.allSatisfy { !$0.readOnly && !$0.isSensitive })
        if version == 0 {
            #expect(retention.isDefault == false)
            #expect(cleanup.isDefault == true)
        } else {
            #expect(retention.configSource == 1)
            #expect(cleanup.configSource == 5)
            #expect(retention.synonyms.map(\.name) == ["retention.ms", "log.retention.hours"])
            #expect(retention.synonyms.map(\.source) == [1, 5])
            #expect(cleanup.synonyms.map(\.name) == ["log.cleanup.policy"])
        }
        if version >= 3 {
            #expect(retention.configType == 5)
            #expect(cleanup.configType == 7)
            #expect(retention.documentation?.isEmpty == false)
        }
    }

    @Test func synonymsAndDocumentationOnlyWhenAsked() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t")
        let response = try wire(await fixture.handlers.describeConfigs(.make(2, "t"), version: 4), version: 4)
        let result = try #require(response.results.first)
        #expect(result.configs.allSatisfy { $0.synonyms.isEmpty && $0.documentation == nil })
    }

    @Test func filtersByRequestedKeys() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t")
        let some = await fixture.handlers.describeConfigs(.make(2, "t", keys: ["segment.ms", "retention.ms", "unknown.key"]), version: 1)
        #expect(some.results.first?.configs.map(\.name) == ["retention.ms", "segment.ms"])
        let empty = await fixture.handlers.describeConfigs(.make(2, "t", keys: []), version: 1)
        #expect(empty.results.first?.configs.count == TopicDefaults.names.count)
    }

    @Test func brokerSettingShowsAsStaticBrokerConfig() async throws {
        let fixture = await AdminFixture(messageMaxBytes: 4_000_000)
        _ = await fixture.seed("t")
        let response = await fixture.handlers.describeConfigs(.make(2, "t", synonyms: true), version: 2)
        let entry = try #require(response.results.first?.entry("max.message.bytes"))
        #expect(entry.value == "4000000")
        #expect(entry.configSource == 4)
        #expect(entry.synonyms.map(\.name) == ["message.max.bytes", "message.max.bytes"])
        #expect(entry.synonyms.map(\.source) == [4, 5])
    }

    @Test func errorsPerResource() async throws {
        let fixture = await AdminFixture()
        var request = DescribeConfigsRequest()
        let resources: [(Int8, String)] = [
            (2, "missing"), (2, "bad/name"), (4, "2"), (4, "abc"), (8, ""), (8, "3"), (99, "x"),
        ]
        request.resources = resources.map { type, name in
            var resource = DescribeConfigsRequest.DescribeConfigsResource()
            resource.resourceType = type
            resource.resourceName = name
            resource.configurationKeys = nil
            return resource
        }
        for version in Int16(0)...4 {
            let response = try wire(await fixture.handlers.describeConfigs(request, version: version), version: version)
            #expect(response.results.map(\.errorCode) == [
                Code.unknownTopicOrPartition, Code.invalidTopic, Code.invalidRequest, Code.invalidRequest,
                Code.invalidRequest, Code.invalidRequest, Code.invalidRequest,
            ])
            #expect(response.results.map(\.resourceName) == resources.map(\.1))
            #expect(response.results.allSatisfy { $0.configs.isEmpty && $0.errorMessage?.isEmpty == false })
        }
    }

    @Test func ownBrokerConfigsAreStaticAndReadOnly() async throws {
        let fixture = await AdminFixture()
        for version in Int16(0)...4 {
            let response = try wire(
                await fixture.handlers.describeConfigs(.make(4, "1", synonyms: true), version: version), version: version)
            let result = try #require(response.results.first)
            #expect(result.errorCode == Code.none)
            #expect(result.configs.map(\.name) == fixture.settings.describedConfigs.map(\.name))
            #expect(result.values["broker.id"] == "1")
            #expect(result.values["num.partitions"] == "2")
            #expect(result.configs.allSatisfy { $0.readOnly })
            if version >= 1 {
                #expect(result.configs.allSatisfy { $0.configSource == 4 && $0.synonyms.count == 1 })
            }
        }
        let clusterDefaults = await fixture.handlers.describeConfigs(.make(4, ""), version: 4)
        #expect(clusterDefaults.results.first?.errorCode == Code.none)
        #expect(clusterDefaults.results.first?.configs.isEmpty == true)
        let loggers = await fixture.handlers.describeConfigs(.make(8, "1"), version: 4)
        #expect(loggers.results.first?.errorCode == Code.none)
    }
}

@Suite struct AlterConfigsTests {
    static func legacy(_ name: String, _ configs: [String: String?], type: Int8 = 2, validateOnly: Bool = false) -> AlterConfigsRequest {
        var resource = AlterConfigsRequest.AlterConfigsResource()
        resource.resourceType = type
        resource.resourceName = name
        resource.configs = configs.keys.sorted().map { key in
            var config = AlterConfigsRequest.AlterableConfig()
            config.name = key
            config.value = configs[key] ?? nil
            return config
        }
        var request = AlterConfigsRequest()
        request.resources = [resource]
        request.validateOnly = validateOnly
        return request
    }

    static func incremental(
        _ name: String, _ operations: [(String, Int8, String?)], type: Int8 = 2, validateOnly: Bool = false
    ) -> IncrementalAlterConfigsRequest {
        var resource = IncrementalAlterConfigsRequest.AlterConfigsResource()
        resource.resourceType = type
        resource.resourceName = name
        resource.configs = operations.map { key, operation, value in
            var config = IncrementalAlterConfigsRequest.AlterableConfig()
            config.name = key
            config.configOperation = operation
            config.value = value
            return config
        }
        var request = IncrementalAlterConfigsRequest()
        request.resources = [resource]
        request.validateOnly = validateOnly
        return request
    }

    func describe(_ fixture: AdminFixture, _ topic: String) async -> DescribeConfigsResponse.DescribeConfigsResult? {
        await fixture.handlers.describeConfigs(.make(2, topic), version: 4).results.first
    }

    @Test(arguments: Int16(0)...2)
    func legacyAlterReplacesTheWholeSet(version: Int16) async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t", configs: ["retention.ms": "1000"])
        let first = try wire(await fixture.handlers.alterConfigs(Self.legacy("t", ["cleanup.policy": "compact"]), version: version), version: version)
        #expect(first.responses.map(\.errorCode) == [Code.none])
        #expect(first.responses.first?.errorMessage == nil)
        #expect(first.responses.first?.resourceName == "t")
        let described = try #require(await describe(fixture, "t"))
        #expect(described.values["cleanup.policy"] == "compact")
        #expect(described.entry("cleanup.policy")?.configSource == 1)
        #expect(described.values["retention.ms"] == "604800000")
        #expect(described.entry("retention.ms")?.configSource == 5)
    }

    @Test func legacyAlterErrorsAndDryRun() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t")
        let dryRun = await fixture.handlers.alterConfigs(Self.legacy("t", ["retention.ms": "5"], validateOnly: true), version: 1)
        #expect(dryRun.responses.map(\.errorCode) == [Code.none])
        #expect(await fixture.state.topics["t"]?.configs == [:])
        #expect(await fixture.controller.written.isEmpty)

        let cases: [(AlterConfigsRequest, Int16)] = [
            (Self.legacy("t", ["retention.ms": "never"]), Code.invalidConfig),
            (Self.legacy("t", ["retention.ms": nil]), Code.invalidConfig),
            (Self.legacy("t", ["bogus": "1"]), Code.invalidConfig),
            (Self.legacy("missing", ["retention.ms": "1"]), Code.unknownTopicOrPartition),
            (Self.legacy("bad name", ["retention.ms": "1"]), Code.invalidTopic),
            (Self.legacy("1", ["message.max.bytes": "1"], type: 4), Code.invalidRequest),
            (Self.legacy("1", ["root": "DEBUG"], type: 8), Code.invalidRequest),
            (Self.legacy("x", ["a": "b"], type: 99), Code.invalidRequest),
        ]
        for (request, expected) in cases {
            let response = try wire(await fixture.handlers.alterConfigs(request, version: 2), version: 2)
            #expect(response.responses.map(\.errorCode) == [expected], "\(request.resources[0].resourceName)")
            #expect(response.responses.first?.errorMessage?.isEmpty == false)
        }
        #expect(await fixture.state.topics["t"]?.configs == [:])
        let noChange = await fixture.handlers.alterConfigs(Self.legacy("1", [:], type: 4), version: 0)
        #expect(noChange.responses.map(\.errorCode) == [Code.none])

        var twice = Self.legacy("t", ["retention.ms": "1"])
        twice.resources.append(twice.resources[0])
        let duplicate = await fixture.handlers.alterConfigs(twice, version: 0)
        #expect(duplicate.responses.map(\.errorCode) == [Code.invalidRequest, Code.invalidRequest])
        #expect(await fixture.state.topics["t"]?.configs == [:])
    }

    @Test(arguments: Int16(0)...1)
    func incrementalAppendSubtractSetDelete(version: Int16) async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t", configs: ["retention.ms": "1000"])
        let append = try wire(
            await fixture.handlers.incrementalAlterConfigs(Self.incremental("t", [("cleanup.policy", 2, "compact")]), version: version),
            version: version)
        #expect(append.responses.map(\.errorCode) == [Code.none])
        #expect(await describe(fixture, "t")?.values["cleanup.policy"] == "delete,compact")

        let mixed = await fixture.handlers.incrementalAlterConfigs(
            Self.incremental("t", [("cleanup.policy", 3, "delete"), ("retention.ms", 1, nil), ("segment.ms", 0, "60000")]),
            version: version)
        #expect(mixed.responses.map(\.errorCode) == [Code.none])
        let described = try #require(await describe(fixture, "t"))
        #expect(described.values["cleanup.policy"] == "compact")
        #expect(described.values["retention.ms"] == "604800000")
        #expect(described.entry("retention.ms")?.configSource == 5)
        #expect(described.values["segment.ms"] == "60000")
        #expect(await fixture.state.topics["t"]?.configs == ["cleanup.policy": "compact", "segment.ms": "60000"])
    }

    @Test func incrementalErrorsAndDryRun() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t")
        let dryRun = await fixture.handlers.incrementalAlterConfigs(
            Self.incremental("t", [("retention.ms", 0, "5")], validateOnly: true), version: 1)
        #expect(dryRun.responses.map(\.errorCode) == [Code.none])
        let cases: [(IncrementalAlterConfigsRequest, Int16)] = [
            (Self.incremental("t", [("retention.ms", 2, "5")]), Code.invalidRequest),
            (Self.incremental("t", [("retention.ms", 7, "5")]), Code.invalidRequest),
            (Self.incremental("t", [("retention.ms", -1, "5")]), Code.invalidRequest),
            (Self.incremental("t", [("retention.ms", 0, nil)]), Code.invalidRequest),
            (Self.incremental("t", [("retention.ms", 0, "1"), ("retention.ms", 1, nil)]), Code.invalidRequest),
            (Self.incremental("t", [("cleanup.policy", 2, "shred")]), Code.invalidConfig),
            (Self.incremental("t", [("retention.ms", 0, "1"), ("bogus", 0, "1")]), Code.invalidConfig),
            (Self.incremental("missing", [("retention.ms", 0, "1")]), Code.unknownTopicOrPartition),
            (Self.incremental("1", [("num.partitions", 0, "3")], type: 4), Code.invalidRequest),
            (Self.incremental("1", [("root", 0, "DEBUG")], type: 8), Code.invalidRequest),
        ]
        for (request, expected) in cases {
            let response = try wire(await fixture.handlers.incrementalAlterConfigs(request, version: 1), version: 1)
            #expect(response.responses.map(\.errorCode) == [expected], "\(request.resources[0].configs.map(\.name))")
        }
        #expect(await fixture.state.topics["t"]?.configs == [:])
        #expect(await fixture.controller.written.count == 6)
    }

    @Test func controllerUnreachable() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t")
        await fixture.controller.failWith(.unavailable("down"))
        let response = await fixture.handlers.incrementalAlterConfigs(Self.incremental("t", [("retention.ms", 0, "1")]), version: 1)
        #expect(response.responses.map(\.errorCode) == [Code.requestTimedOut])
        let legacy = await fixture.handlers.alterConfigs(Self.legacy("t", ["retention.ms": "1"]), version: 1)
        #expect(legacy.responses.map(\.errorCode) == [Code.requestTimedOut])
    }
}
