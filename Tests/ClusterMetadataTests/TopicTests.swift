import ClusterMetadata
import KafkaProtocol
import Testing

@Suite struct TopicTests {
    @Test(arguments: ["", ".", "..", String(repeating: "a", count: 250), "a b", "a/b", "é", "a:b"])
    func invalidNames(name: String) {
        var cluster = Cluster()
        #expect(cluster.createTopic(name, partitions: 1) == MetadataErrorCode.invalidTopicException)
        #expect(cluster.state.topics.isEmpty)
    }

    @Test(arguments: ["a", "...", "A-z_0.9", String(repeating: "x", count: 249), "__consumer_offsets"])
    func validNames(name: String) {
        var cluster = Cluster()
        #expect(cluster.createTopic(name, partitions: 1) == 0)
    }

    @Test func createTopicsReportsPerTopic() {
        var cluster = Cluster()
        cluster.register(1)
        let result = cluster.apply(.createTopics([
            TopicSpec(name: "ok", topicId: uuid(1), partitionCount: 3, replicationFactor: 3, configs: ["retention.ms": "1000"]),
            TopicSpec(name: "ok", topicId: uuid(2), partitionCount: 1),
            TopicSpec(name: "zero", topicId: uuid(3), partitionCount: 0),
            TopicSpec(name: "huge", topicId: uuid(4), partitionCount: MetadataState.maxPartitionsPerTopic + 1),
            TopicSpec(name: "rf", topicId: uuid(5), partitionCount: 1, replicationFactor: 0),
            TopicSpec(name: "rf2", topicId: uuid(6), partitionCount: 1, replicationFactor: -2),
            TopicSpec(name: "cfg", topicId: uuid(7), partitionCount: 1, configs: ["no.such.config": "1"]),
            TopicSpec(name: "cfg2", topicId: uuid(8), partitionCount: 1, configs: ["retention.ms": "soon"]),
            TopicSpec(name: "noid", topicId: .zero, partitionCount: 1),
            TopicSpec(name: "sameid", topicId: uuid(1), partitionCount: 1),
            TopicSpec(name: "o_k", topicId: uuid(9), partitionCount: 1),
            TopicSpec(name: "internal", topicId: uuid(10), partitionCount: 2, isInternal: true),
        ]))
        #expect(items(result) == [
            0, MetadataErrorCode.topicAlreadyExists, MetadataErrorCode.invalidPartitions, MetadataErrorCode.invalidPartitions,
            MetadataErrorCode.invalidReplicationFactor, MetadataErrorCode.invalidReplicationFactor,
            MetadataErrorCode.invalidConfig, MetadataErrorCode.invalidConfig, MetadataErrorCode.invalidRequest,
            MetadataErrorCode.invalidRequest, 0, 0,
        ])
        #expect(cluster.state.topicNames == ["internal", "o_k", "ok"])
        let topic = cluster.state.topics["ok"]
        #expect(topic?.partitions.count == 3)
        #expect(topic?.replicationFactor == 1)
        #expect(topic?.configs == ["retention.ms": "1000"])
        #expect(cluster.state.topic(id: uuid(1))?.name == "ok")
        #expect(cluster.state.topics["internal"]?.isInternal == true)
        #expect(cluster.state.streams.count == 6)
        // '.' and '_' collide in Kafka's metric names.
        #expect(cluster.createTopic("o.k", partitions: 1) == MetadataErrorCode.invalidTopicException)
    }

    @Test func partitionsAndStreamsStartEmpty() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.createTopic("t", partitions: 2)
        for partition in 0..<Int32(2) {
            let record = cluster.state.partition(PartitionKey(topic: "t", partition: partition))
            let stream = cluster.stream("t", partition)
            #expect(record?.leader == 1)
            #expect(stream?.partition == partition)
            #expect(stream?.topicId == cluster.state.topics["t"]?.topicId)
            #expect(stream?.epoch == record?.leaderEpoch)
            #expect(stream?.committedEnd == 0)
            #expect(stream?.walWriter == -1)
        }
    }

    @Test func noLiveBrokerMeansNoLeaderUntilOneRegisters() {
        var cluster = Cluster()
        cluster.createTopic("t", partitions: 2)
        #expect(cluster.state.partition(PartitionKey(topic: "t", partition: 0))?.leader == -1)
        cluster.register(4)
        let record = cluster.state.partition(PartitionKey(topic: "t", partition: 0))
        #expect(record?.leader == 4)
        #expect(record?.leaderEpoch == 1)
        #expect(cluster.stream("t", 0)?.epoch == 1)
    }

    @Test func deleteTopics() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.createTopic("a", partitions: 1)
        cluster.createTopic("b", partitions: 1)
        let result = cluster.apply(.deleteTopics(names: ["a", "missing", "a"], now: 5))
        #expect(items(result) == [0, MetadataErrorCode.unknownTopicOrPartition, MetadataErrorCode.unknownTopicOrPartition])
        #expect(cluster.state.topicNames == ["b"])
        #expect(cluster.state.streams.count == 1)
        #expect(cluster.state.topic(id: uuid(1)) == nil)
        // The name and id are free again.
        #expect(cluster.createTopic("a", partitions: 1) == 0)
    }

    @Test func deletingATopicDestroysObjectsOnlyItReaches() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.createTopic("a", partitions: 1)
        cluster.createTopic("b", partitions: 1)
        guard let a = cluster.stream("a", 0), let b = cluster.stream("b", 0) else {
            Issue.record("missing streams")
            return
        }
        let alone = cluster.prepare()
        #expect(cluster.apply(.commitObject(
            ObjectCommit(objectId: alone, size: 1, ranges: [StreamRange(streamId: a.id, epoch: a.epoch, startOffset: 0, endOffset: 5)]),
            compactedSources: [], now: 1)) == .ok)
        let shared = cluster.prepare()
        #expect(cluster.apply(.commitObject(
            ObjectCommit(objectId: shared, size: 1, ranges: [
                StreamRange(streamId: a.id, epoch: a.epoch, startOffset: 5, endOffset: 9),
                StreamRange(streamId: b.id, epoch: b.epoch, startOffset: 0, endOffset: 3),
            ]),
            compactedSources: [], now: 1)) == .ok)
        #expect(items(cluster.apply(.deleteTopics(names: ["a"], now: 50))) == [0])
        #expect(cluster.state.objects[alone]?.state == .destroyed)
        #expect(cluster.state.objects[alone]?.destroyedAt == 50)
        #expect(cluster.state.objects[shared]?.state == .committed)
        #expect(cluster.state.objectsDueForDeletion(now: 60, gracePeriod: 10) == [alone])
        #expect(cluster.state.objectsDueForDeletion(now: 59, gracePeriod: 10) == [])
        #expect(items(cluster.apply(.deleteTopics(names: ["b"], now: 70))) == [0])
        #expect(cluster.state.objects[shared]?.state == .destroyed)
        #expect(cluster.state.objectsDueForDeletion(now: 80, gracePeriod: 10) == [alone, shared])
    }

    @Test func createPartitions() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.createTopic("t", partitions: 2)
        let result = cluster.apply(.createPartitions([
            PartitionCountChange(topic: "t", count: 5),
            PartitionCountChange(topic: "t", count: 5),
            PartitionCountChange(topic: "t", count: 1),
            PartitionCountChange(topic: "missing", count: 3),
            PartitionCountChange(topic: "t", count: MetadataState.maxPartitionsPerTopic + 1),
        ]))
        #expect(items(result) == [
            0, MetadataErrorCode.invalidPartitions, MetadataErrorCode.invalidPartitions,
            MetadataErrorCode.unknownTopicOrPartition, MetadataErrorCode.invalidPartitions,
        ])
        #expect(cluster.state.topics["t"]?.partitions.count == 5)
        #expect(cluster.stream("t", 4)?.partition == 4)
        #expect(Set(cluster.state.topics["t"]?.partitions.map(\.streamId) ?? []).count == 5)
    }

    @Test func alterConfigsReplacesTheWholeSet() {
        var cluster = Cluster()
        cluster.createTopic("t", partitions: 1, configs: ["retention.ms": "5", "segment.bytes": "1048576"])
        #expect(cluster.apply(.alterTopicConfigs(topic: "t", configs: ["cleanup.policy": "compact"])) == .ok)
        #expect(cluster.state.topics["t"]?.configs == ["cleanup.policy": "compact"])
        #expect(cluster.apply(.alterTopicConfigs(topic: "t", configs: ["cleanup.policy": "bogus"])).errorCode
            == MetadataErrorCode.invalidConfig)
        #expect(cluster.apply(.alterTopicConfigs(topic: "t", configs: ["bogus": "1"])).errorCode == MetadataErrorCode.invalidConfig)
        #expect(cluster.apply(.alterTopicConfigs(topic: "x", configs: [:])).errorCode == MetadataErrorCode.unknownTopicOrPartition)
        #expect(cluster.state.topics["t"]?.configs == ["cleanup.policy": "compact"])
    }

    @Test(arguments: [
        ("retention.ms", "-1", true), ("retention.ms", "-2", false), ("retention.bytes", "10", true),
        ("max.message.bytes", "1048588", true), ("max.message.bytes", "99999999999", false),
        ("message.timestamp.type", "LogAppendTime", true), ("message.timestamp.type", "logappendtime", false),
        ("segment.bytes", "13", false), ("cleanup.policy", "compact,delete", true), ("cleanup.policy", "compact,x", false),
        ("compression.type", "zstd", true), ("compression.type", "brotli", false), ("min.cleanable.dirty.ratio", "0.5", true),
        ("min.cleanable.dirty.ratio", "1.5", false), ("unclean.leader.election.enable", "yes", false),
    ])
    func configValueValidation(key: String, value: String, valid: Bool) {
        #expect((TopicConfig.validate(key: key, value: value) == nil) == valid)
    }

    @Test func incrementalAlterConfigs() {
        var cluster = Cluster()
        cluster.createTopic("t", partitions: 1, configs: ["retention.ms": "5"])
        func alter(_ operations: [ConfigOperation]) -> Int16 {
            cluster.apply(.incrementalAlterTopicConfigs(topic: "t", operations: operations)).errorCode
        }
        #expect(alter([
            ConfigOperation(key: "retention.bytes", operation: .set, value: "100"),
            ConfigOperation(key: "retention.ms", operation: .delete, value: nil),
            ConfigOperation(key: "cleanup.policy", operation: .append, value: "compact"),
        ]) == 0)
        #expect(cluster.state.topics["t"]?.configs == ["retention.bytes": "100", "cleanup.policy": "delete,compact"])
        #expect(alter([ConfigOperation(key: "cleanup.policy", operation: .subtract, value: "delete")]) == 0)
        #expect(cluster.state.topics["t"]?.configs["cleanup.policy"] == "compact")
        #expect(alter([ConfigOperation(key: "cleanup.policy", operation: .append, value: "compact")]) == 0)
        #expect(cluster.state.topics["t"]?.configs["cleanup.policy"] == "compact")
        let before = cluster.state.topics["t"]?.configs
        // All-or-nothing: a bad operation after good ones changes nothing.
        #expect(alter([
            ConfigOperation(key: "retention.bytes", operation: .set, value: "7"),
            ConfigOperation(key: "retention.ms", operation: .append, value: "1"),
        ]) == MetadataErrorCode.invalidRequest)
        #expect(alter([
            ConfigOperation(key: "retention.bytes", operation: .set, value: "7"),
            ConfigOperation(key: "cleanup.policy", operation: .append, value: "purge"),
        ]) == MetadataErrorCode.invalidConfig)
        #expect(alter([ConfigOperation(key: "nope", operation: .delete, value: nil)]) == MetadataErrorCode.invalidConfig)
        #expect(alter([ConfigOperation(key: "retention.ms", operation: .set, value: nil)]) == MetadataErrorCode.invalidRequest)
        #expect(alter([
            ConfigOperation(key: "retention.ms", operation: .set, value: "1"),
            ConfigOperation(key: "retention.ms", operation: .delete, value: nil),
        ]) == MetadataErrorCode.invalidRequest)
        #expect(cluster.state.topics["t"]?.configs == before)
        #expect(cluster.apply(.incrementalAlterTopicConfigs(topic: "zz", operations: [])).errorCode
            == MetadataErrorCode.unknownTopicOrPartition)
    }
}
