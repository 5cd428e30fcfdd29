import ClusterMetadata
import KafkaProtocol
import Testing

/// `MetadataState.zoneLeader`: the broker a client of a zone is sent to for each partition.
@Suite struct ZoneViewTests {
    /// Brokers 1, 2 in zone a, 3 in zone b, 4 in zone c; topic "t" with `partitions` placed by the controller.
    static func state(partitions: Int32) -> MetadataState {
        var state = MetadataState()
        var index: UInt64 = 0
        func apply(_ command: MetadataCommand) {
            index += 1
            _ = state.apply(command, index: index)
        }
        for (id, zone) in [(1, "a"), (2, "a"), (3, "b"), (4, "c")] {
            apply(.registerNode(NodeRegistration(id: NodeID(id), kind: .broker, zone: zone, listener: "127.0.0.1:\(9000 + id)", admin: "127.0.0.1:\(9100 + id)")))
        }
        apply(.createTopics([TopicSpec(name: "t", topicId: KafkaUUID(high: 1, low: 1), partitionCount: partitions, configs: [:])]))
        return state
    }

    @Test func partitionsLedInTheZoneKeepTheirLeaderAndOthersSpreadOverTheZonesBrokers() throws {
        let state = Self.state(partitions: 32)
        let topic = try #require(state.topics["t"])
        var shown: [NodeID: Int] = [:]
        for index in topic.partitions.indices {
            let key = PartitionKey(topic: "t", partition: Int32(index))
            let leader = topic.partitions[index].leader
            let inA = try #require(state.zoneLeader(of: key, zone: "a"))
            if leader == 1 || leader == 2 { #expect(inA == leader) } else { #expect([1, 2].contains(inA)) }
            shown[inA, default: 0] += 1
            #expect(state.zoneLeader(of: key, zone: "b") == 3, "zone b has one broker")
            // The same answer every time (all brokers of a zone agree).
            #expect(state.zoneLeader(of: key, zone: "a") == inA)
        }
        #expect(shown.keys.sorted() == [1, 2], "both of zone a's brokers take partitions led elsewhere")
    }

    @Test func aZoneWithoutActiveBrokersSeesTheRealLeader() throws {
        let state = Self.state(partitions: 4)
        let topic = try #require(state.topics["t"])
        for index in topic.partitions.indices {
            let key = PartitionKey(topic: "t", partition: Int32(index))
            #expect(state.zoneLeader(of: key, zone: "nowhere") == topic.partitions[index].leader)
        }
        #expect(state.zoneLeader(of: PartitionKey(topic: "missing", partition: 0), zone: "a") == nil)
    }
}
