import ClusterMetadata
import Testing

@Suite struct PlacementTests {
    /// Brokers 1-6: 1,2 in zone a; 3,4 in b; 5,6 in c.
    func sixBrokers() -> Cluster {
        var cluster = Cluster()
        for id in NodeID(1)...6 { cluster.register(id, zone: ["a", "b", "c"][Int(id - 1) / 2]) }
        return cluster
    }

    func ledCounts(_ cluster: Cluster) -> [NodeID: Int] {
        var counts: [NodeID: Int] = [:]
        for topic in cluster.state.topics.values {
            for partition in topic.partitions { counts[partition.leader, default: 0] += 1 }
        }
        return counts
    }

    func zoneCounts(_ cluster: Cluster) -> [String: Int] {
        var counts: [String: Int] = [:]
        for (leader, count) in ledCounts(cluster) { counts[cluster.state.nodes[leader]?.zone ?? "?", default: 0] += count }
        return counts
    }

    @Test func balancedByBrokerAndZone() {
        var cluster = sixBrokers()
        #expect(cluster.createTopic("t", partitions: 60) == 0)
        #expect(ledCounts(cluster) == [1: 10, 2: 10, 3: 10, 4: 10, 5: 10, 6: 10])
        #expect(zoneCounts(cluster) == ["a": 20, "b": 20, "c": 20])
        // Consecutive partitions go to different zones.
        let leaders = cluster.state.topics["t"]?.partitions.prefix(3).map { cluster.state.nodes[$0.leader]?.zone ?? "" } ?? []
        #expect(Set(leaders) == ["a", "b", "c"])
    }

    @Test func balancedAcrossTopicsAndGrowth() {
        var cluster = sixBrokers()
        cluster.createTopic("x", partitions: 7)
        cluster.createTopic("y", partitions: 11)
        #expect(items(cluster.apply(.createPartitions([PartitionCountChange(topic: "x", count: 13)]))) == [0])
        let counts = ledCounts(cluster).values
        #expect(counts.reduce(0, +) == 24)
        #expect((counts.max() ?? 0) - (counts.min() ?? 0) <= 1)
    }

    @Test func fencedBrokerPartitionsGoToSameZoneFirst() {
        var cluster = sixBrokers()
        cluster.createTopic("t", partitions: 60)
        let moved = cluster.state.partitionKeys(ledBy: 3)
        let epochs = moved.map { cluster.state.partition($0)?.leaderEpoch ?? -9 }
        #expect(cluster.apply(.fenceNode(id: 3, incarnation: cluster.incarnation(3))) == .ok)
        #expect(cluster.state.partitionKeys(ledBy: 3).isEmpty)
        for (key, epoch) in zip(moved, epochs) {
            #expect(cluster.state.partition(key)?.leader == 4)
            #expect(cluster.state.partition(key)?.leaderEpoch == epoch + 1)
        }
        #expect(ledCounts(cluster)[4] == 20)
        // Zone b is now empty of live brokers after 4 goes too: spread over the other zones.
        #expect(cluster.apply(.fenceNode(id: 4, incarnation: cluster.incarnation(4))) == .ok)
        #expect(ledCounts(cluster) == [1: 15, 2: 15, 5: 15, 6: 15])
    }

    @Test func lastBrokerFencedLeavesNoLeaderThenUnfenceTakesThemBack() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.createTopic("t", partitions: 3)
        #expect(cluster.apply(.fenceNode(id: 1, incarnation: cluster.incarnation(1))) == .ok)
        let key = PartitionKey(topic: "t", partition: 1)
        #expect(cluster.state.partition(key)?.leader == -1)
        #expect(cluster.state.partition(key)?.leaderEpoch == 1)
        #expect(cluster.apply(.unfenceNode(id: 1, incarnation: cluster.incarnation(1))) == .ok)
        #expect(cluster.state.partition(key)?.leader == 1)
        #expect(cluster.state.partition(key)?.leaderEpoch == 2)
        #expect(cluster.stream("t", 1)?.epoch == 2)
    }

    @Test func fencingANonBrokerMovesNothing() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.register(2, .walWriter)
        cluster.createTopic("t", partitions: 2)
        let before = cluster.state.topics
        #expect(cluster.apply(.fenceNode(id: 2, incarnation: cluster.incarnation(2))) == .ok)
        #expect(cluster.state.topics == before)
    }

    @Test func moveLeader() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.register(2)
        cluster.register(3, .walWriter)
        cluster.createTopic("t", partitions: 1)
        let key = PartitionKey(topic: "t", partition: 0)
        let from = cluster.state.partition(key)?.leader ?? -1
        let to: NodeID = from == 1 ? 2 : 1
        let epoch = cluster.state.partition(key)?.leaderEpoch ?? -9
        #expect(cluster.apply(.moveLeader(topic: "t", partition: 0, to: to)) == .ok)
        #expect(cluster.state.partition(key)?.leader == to)
        #expect(cluster.state.partition(key)?.leaderEpoch == epoch + 1)
        #expect(cluster.stream("t", 0)?.epoch == epoch + 1)
        // Moving to the current leader changes nothing.
        #expect(cluster.apply(.moveLeader(topic: "t", partition: 0, to: to)) == .ok)
        #expect(cluster.state.partition(key)?.leaderEpoch == epoch + 1)
        #expect(cluster.apply(.moveLeader(topic: "t", partition: 1, to: from)).errorCode == MetadataErrorCode.unknownTopicOrPartition)
        #expect(cluster.apply(.moveLeader(topic: "u", partition: 0, to: from)).errorCode == MetadataErrorCode.unknownTopicOrPartition)
        #expect(cluster.apply(.moveLeader(topic: "t", partition: 0, to: 3)).errorCode == MetadataErrorCode.brokerNotAvailable)
        #expect(cluster.apply(.moveLeader(topic: "t", partition: 0, to: 9)).errorCode == MetadataErrorCode.brokerNotAvailable)
        cluster.apply(.fenceNode(id: from, incarnation: cluster.incarnation(from)))
        #expect(cluster.apply(.moveLeader(topic: "t", partition: 0, to: from)).errorCode == MetadataErrorCode.brokerNotAvailable)
        #expect(cluster.state.partition(key)?.leaderEpoch == epoch + 1)
    }

    @Test func reassignmentsArePendingUntilTheLeaderMoves() {
        var cluster = Cluster()
        cluster.register(1)
        cluster.register(2)
        cluster.register(3, .compactor)
        cluster.createTopic("t", partitions: 2)
        let leader0 = cluster.state.partition(PartitionKey(topic: "t", partition: 0))?.leader ?? -1
        let other0: NodeID = leader0 == 1 ? 2 : 1
        let result = cluster.apply(.alterReassignments([
            ReassignmentRequest(topic: "t", partition: 0, replicas: [other0, leader0]),
            ReassignmentRequest(topic: "t", partition: 1, replicas: nil),
            ReassignmentRequest(topic: "t", partition: 7, replicas: [1]),
            ReassignmentRequest(topic: "t", partition: 1, replicas: []),
            ReassignmentRequest(topic: "t", partition: 1, replicas: [1, 1]),
            ReassignmentRequest(topic: "t", partition: 1, replicas: [9]),
            ReassignmentRequest(topic: "t", partition: 1, replicas: [3]),
        ]))
        #expect(items(result) == [
            0, MetadataErrorCode.noReassignmentInProgress, MetadataErrorCode.unknownTopicOrPartition,
            MetadataErrorCode.invalidReplicaAssignment, MetadataErrorCode.invalidReplicaAssignment,
            MetadataErrorCode.invalidReplicaAssignment, MetadataErrorCode.invalidReplicaAssignment,
        ])
        #expect(cluster.state.pendingReassignments.map(\.target) == [other0])
        #expect(cluster.state.pendingReassignments.first?.replicas == [other0, leader0])
        #expect(cluster.apply(.moveLeader(topic: "t", partition: 0, to: other0)) == .ok)
        #expect(cluster.state.pendingReassignments.isEmpty)

        // Reassigning to the current leader completes at once; cancelling removes a pending one.
        let leader1 = cluster.state.partition(PartitionKey(topic: "t", partition: 1))?.leader ?? -1
        #expect(items(cluster.apply(.alterReassignments([ReassignmentRequest(topic: "t", partition: 1, replicas: [leader1])]))) == [0])
        #expect(cluster.state.pendingReassignments.isEmpty)
        let other1: NodeID = leader1 == 1 ? 2 : 1
        cluster.apply(.alterReassignments([ReassignmentRequest(topic: "t", partition: 1, replicas: [other1])]))
        #expect(cluster.state.pendingReassignments.count == 1)
        #expect(items(cluster.apply(.alterReassignments([ReassignmentRequest(topic: "t", partition: 1, replicas: nil)]))) == [0])
        #expect(cluster.state.pendingReassignments.isEmpty)
        // Deleting the topic drops its pending requests.
        cluster.apply(.alterReassignments([ReassignmentRequest(topic: "t", partition: 1, replicas: [other1])]))
        cluster.apply(.deleteTopics(names: ["t"], now: 1))
        #expect(cluster.state.pendingReassignments.isEmpty)
    }

    @Test func manyPartitionsStayBalancedThroughFencing() {
        var cluster = sixBrokers()
        #expect(cluster.createTopic("big", partitions: 30_000) == 0)
        #expect(ledCounts(cluster) == [1: 5_000, 2: 5_000, 3: 5_000, 4: 5_000, 5: 5_000, 6: 5_000])
        #expect(cluster.apply(.fenceNode(id: 5, incarnation: cluster.incarnation(5))) == .ok)
        #expect(ledCounts(cluster) == [1: 5_000, 2: 5_000, 3: 5_000, 4: 5_000, 6: 10_000])
        #expect(cluster.apply(.unfenceNode(id: 5, incarnation: cluster.incarnation(5))) == .ok)
        #expect(cluster.state.partitionKeys(ledBy: 5).isEmpty)
    }
}
