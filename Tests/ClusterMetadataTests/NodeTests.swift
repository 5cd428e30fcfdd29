import ClusterMetadata
import Testing

@Suite struct NodeTests {
    @Test func registrationHandsOutGrowingIncarnations() {
        var cluster = Cluster()
        let first = cluster.register(1, zone: "a")
        let other = cluster.register(2, .walWriter, zone: "b")
        let again = cluster.register(1, zone: "c")
        #expect(first == 1)
        #expect(other == 2)
        #expect(again == 3)
        #expect(cluster.state.nodes[1]?.zone == "c")
        #expect(cluster.state.nodes[1]?.state == .active)
        #expect(cluster.state.nodes[2]?.registration.listener == "127.0.0.1:9002")
        #expect(cluster.state.lastAppliedIndex == 3)
    }

    @Test func registrationErrors() {
        var cluster = Cluster()
        cluster.register(1)
        let before = cluster.state
        let kindChange = cluster.apply(.registerNode(NodeRegistration(id: 1, kind: .compactor, zone: "a", listener: "x", admin: "y")))
        #expect(kindChange.errorCode == MetadataErrorCode.invalidRequest)
        let negative = cluster.apply(.registerNode(NodeRegistration(id: -1, kind: .broker, zone: "a", listener: "x", admin: "y")))
        #expect(negative.errorCode == MetadataErrorCode.invalidRequest)
        #expect(content(cluster.state) == content(before))
    }

    /// Pods with IP-derived ids: a compactor on the address of a dead broker takes over its fenced
    /// record once the broker leads nothing; a live or leading broker keeps it, and WAL writers never change kind.
    @Test func fencedRecordChangesKindOnlyWhenIdle() {
        var cluster = Cluster()
        cluster.register(70_001)
        cluster.register(70_002)
        cluster.createTopic("t", partitions: 2)
        let live = cluster.apply(.registerNode(NodeRegistration(id: 70_001, kind: .compactor, zone: "a", listener: "x", admin: "y")))
        #expect(live.errorCode == MetadataErrorCode.invalidRequest)
        cluster.apply(.fenceNode(id: 70_001, incarnation: cluster.incarnation(70_001)))
        #expect(cluster.state.partitionKeys(ledBy: 70_001).isEmpty)
        let takeOver = cluster.apply(.registerNode(NodeRegistration(id: 70_001, kind: .compactor, zone: "a", listener: "x", admin: "y")))
        guard case .nodeRegistered = takeOver else {
            Issue.record("a fenced idle broker's id is not taken over: \(takeOver)")
            return
        }
        #expect(cluster.state.nodes[70_001]?.kind == .compactor)
        // The last broker, fenced, still leads (no one to move to): its id stays a broker's.
        cluster.apply(.fenceNode(id: 70_002, incarnation: cluster.incarnation(70_002)))
        if !cluster.state.partitionKeys(ledBy: 70_002).isEmpty {
            let refused = cluster.apply(.registerNode(NodeRegistration(id: 70_002, kind: .compactor, zone: "a", listener: "x", admin: "y")))
            #expect(refused.errorCode == MetadataErrorCode.invalidRequest)
        }
        cluster.register(200, .walWriter)
        cluster.apply(.fenceNode(id: 200, incarnation: cluster.incarnation(200)))
        let wal = cluster.apply(.registerNode(NodeRegistration(id: 200, kind: .compactor, zone: "a", listener: "x", admin: "y")))
        #expect(wal.errorCode == MetadataErrorCode.invalidRequest)
    }

    @Test func staleOrRepeatedIndexIsRejected() {
        var state = MetadataState()
        _ = state.apply(.prepareObject(kind: .stream, deadline: 5), index: 5)
        let before = state
        let result = state.apply(.prepareObject(kind: .stream, deadline: 5), index: 5)
        #expect(result.errorCode == MetadataErrorCode.invalidRequest)
        #expect(state == before)
    }

    @Test func fenceAndUnfence() {
        var cluster = Cluster()
        let incarnation = cluster.register(1)
        #expect(cluster.apply(.fenceNode(id: 1, incarnation: incarnation)) == .ok)
        #expect(cluster.state.nodes[1]?.state == .fenced)
        #expect(cluster.apply(.fenceNode(id: 1, incarnation: incarnation)) == .ok)
        #expect(cluster.apply(.unfenceNode(id: 1, incarnation: incarnation)) == .ok)
        #expect(cluster.state.nodes[1]?.state == .active)
        #expect(cluster.apply(.unfenceNode(id: 1, incarnation: incarnation)) == .ok)
    }

    @Test func staleIncarnationIsANoOpError() {
        var cluster = Cluster()
        let old = cluster.register(1)
        cluster.register(1)
        let before = cluster.state.nodes
        #expect(cluster.apply(.fenceNode(id: 1, incarnation: old)).errorCode == MetadataErrorCode.staleBrokerEpoch)
        #expect(cluster.apply(.unfenceNode(id: 1, incarnation: old)).errorCode == MetadataErrorCode.staleBrokerEpoch)
        #expect(cluster.apply(.unregisterNode(id: 1, incarnation: old)).errorCode == MetadataErrorCode.staleBrokerEpoch)
        #expect(cluster.apply(.fenceNode(id: 9, incarnation: 1)).errorCode == MetadataErrorCode.brokerIdNotRegistered)
        #expect(cluster.state.nodes == before)
    }

    @Test func unregisterMovesLeadershipAndDropsReassignmentsToTheNode() {
        var cluster = Cluster()
        let one = cluster.register(1, zone: "a")
        cluster.register(2, zone: "a")
        #expect(cluster.createTopic("t", partitions: 2) == 0)
        let key = PartitionKey(topic: "t", partition: 0)
        let leader = cluster.state.partition(key)?.leader
        let other: NodeID = leader == 1 ? 2 : 1
        #expect(items(cluster.apply(.alterReassignments([ReassignmentRequest(topic: "t", partition: 0, replicas: [other])]))) == [0])
        #expect(cluster.state.pendingReassignments.count == 1)
        #expect(cluster.apply(.unregisterNode(id: 1, incarnation: one)) == .ok)
        #expect(cluster.state.nodes[1] == nil)
        #expect(cluster.state.partitionKeys(ledBy: 2).count == 2)
        #expect(cluster.state.pendingReassignments.allSatisfy { $0.target != 1 })
    }

    @Test func reRegisteredBrokerKeepsItsPartitionsWithBumpedEpochs() {
        var cluster = Cluster()
        cluster.register(1)
        #expect(cluster.createTopic("t", partitions: 3) == 0)
        let epochs = (0..<3).map { cluster.state.partition(PartitionKey(topic: "t", partition: $0))?.leaderEpoch ?? -9 }
        cluster.register(1)
        for partition in 0..<Int32(3) {
            let record = cluster.state.partition(PartitionKey(topic: "t", partition: partition))
            #expect(record?.leader == 1)
            #expect(record?.leaderEpoch == epochs[Int(partition)] + 1)
            #expect(cluster.stream("t", partition)?.epoch == record?.leaderEpoch)
        }
    }

    @Test func producerIdBlocksNeverOverlap() {
        var cluster = Cluster()
        let incarnation = cluster.register(1)
        cluster.register(2, .walWriter)
        #expect(cluster.apply(.allocateProducerIds(brokerId: 1, incarnation: incarnation)) == .producerIds(firstId: 0, count: 1000))
        #expect(cluster.apply(.allocateProducerIds(brokerId: 1, incarnation: incarnation)) == .producerIds(firstId: 1000, count: 1000))
        #expect(cluster.apply(.allocateProducerIds(brokerId: 1, incarnation: incarnation + 7)).errorCode == MetadataErrorCode.staleBrokerEpoch)
        #expect(cluster.apply(.allocateProducerIds(brokerId: 2, incarnation: cluster.incarnation(2))).errorCode
            == MetadataErrorCode.brokerIdNotRegistered)
        #expect(cluster.apply(.allocateProducerIds(brokerId: 5, incarnation: 1)).errorCode == MetadataErrorCode.brokerIdNotRegistered)
        #expect(cluster.state.nextProducerId == 2000)
    }
}
