import BrokerCore
import ClusterMetadata
import KafkaProtocol
import Testing

@Suite struct DescribeClusterTests {
    @Test(arguments: Int16(0)...1)
    func listsActiveBrokers(version: Int16) async throws {
        let fixture = await AdminFixture()
        let registered = await fixture.controller.apply(
            .registerNode(NodeRegistration(id: 3, kind: .broker, zone: "", listener: "10.0.0.3:9094", admin: "10.0.0.3:9102")))
        guard case .nodeRegistered(let incarnation) = registered else {
            Issue.record("broker 3 did not register: \(registered)")
            return
        }
        // A listener that is not HOST:PORT cannot be dialled; it is left out rather than sent half-parsed.
        await fixture.controller.apply(
            .registerNode(NodeRegistration(id: 4, kind: .broker, zone: "c", listener: "no-port", admin: "")))
        let response = try wire(await fixture.handlers.describeCluster(DescribeClusterRequest(), version: version), version: version)
        #expect(response.errorCode == Code.none)
        #expect(response.clusterId == "test-cluster")
        #expect(response.controllerId == 1)
        #expect(response.clusterAuthorizedOperations == Int32.min)
        #expect(response.brokers.map(\.brokerId) == [1, 2, 3])
        #expect(response.brokers.map(\.host) == ["127.0.0.1", "::1", "10.0.0.3"])
        #expect(response.brokers.map(\.port) == [9092, 9093, 9094])
        #expect(response.brokers.map(\.rack) == ["a", "b", nil])

        await fixture.controller.apply(.fenceNode(id: 3, incarnation: incarnation))
        let afterFence = await fixture.handlers.describeCluster(DescribeClusterRequest(), version: version)
        #expect(afterFence.brokers.map(\.brokerId) == [1, 2])
    }

    @Test func authorizedOperationsWhenAsked() async throws {
        let fixture = await AdminFixture()
        var request = DescribeClusterRequest()
        request.includeClusterAuthorizedOperations = true
        let response = try wire(await fixture.handlers.describeCluster(request, version: 1), version: 1)
        // CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
        #expect(response.clusterAuthorizedOperations == 8096)
    }

    @Test func controllerEndpointTypeIsRefused() async throws {
        let fixture = await AdminFixture()
        var request = DescribeClusterRequest()
        request.endpointType = 2
        let response = try wire(await fixture.handlers.describeCluster(request, version: 1), version: 1)
        #expect(response.errorCode == Code.mismatchedEndpointType)
        #expect(response.brokers.isEmpty)
    }

    @Test func unregisteredBrokerNamesAnotherAsController() async throws {
        let fixture = await AdminFixture()
        let settings = BrokerSettings(nodeId: 5, zone: "a", advertisedHost: "127.0.0.1", advertisedPort: 9099)
        let handlers = AdminHandlers(
            settings: settings, writer: fixture.controller, metadata: fixture.controller, now: { 0 }, logger: .init(label: "t"))
        let response = await handlers.describeCluster(DescribeClusterRequest(), version: 0)
        #expect(response.controllerId == 1)
    }
}

@Suite struct PartitionReassignmentTests {
    static func alter(_ topic: String, _ partitions: [(Int32, [Int32]?)]) -> AlterPartitionReassignmentsRequest {
        var reassignable = AlterPartitionReassignmentsRequest.ReassignableTopic()
        reassignable.name = topic
        reassignable.partitions = partitions.map { index, replicas in
            var partition = AlterPartitionReassignmentsRequest.ReassignablePartition()
            partition.partitionIndex = index
            partition.replicas = replicas
            return partition
        }
        var request = AlterPartitionReassignmentsRequest()
        request.topics = [reassignable]
        return request
    }

    @Test func listedThenCancelled() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t", partitions: 2)
        let state = await fixture.state
        let leader0 = try #require(state.partition(PartitionKey(topic: "t", partition: 0))?.leader)
        let leader1 = try #require(state.partition(PartitionKey(topic: "t", partition: 1))?.leader)
        let other0: Int32 = leader0 == 1 ? 2 : 1

        let altered = try wire(
            await fixture.handlers.alterPartitionReassignments(
                Self.alter("t", [(0, [other0]), (1, [leader1]), (5, [1]), (1, [])]), version: 0),
            version: 0)
        #expect(altered.errorCode == Code.none)
        #expect(altered.responses.map(\.name) == ["t"])
        #expect(altered.responses.first?.partitions.map(\.partitionIndex) == [0, 1, 5, 1])
        #expect(altered.responses.first?.partitions.map(\.errorCode) == [
            Code.none, Code.none, Code.unknownTopicOrPartition, Code.invalidReplicaAssignment,
        ])

        let listAll = try wire(
            await fixture.handlers.listPartitionReassignments(ListPartitionReassignmentsRequest(), version: 0), version: 0)
        #expect(listAll.errorCode == Code.none)
        #expect(listAll.topics.map(\.name) == ["t"])
        let ongoing = try #require(listAll.topics.first?.partitions.first)
        #expect(listAll.topics.first?.partitions.count == 1)
        #expect(ongoing.partitionIndex == 0)
        #expect(ongoing.replicas == [other0, leader0])
        #expect(ongoing.addingReplicas == [other0])
        #expect(ongoing.removingReplicas == [leader0])

        var filtered = ListPartitionReassignmentsRequest()
        var wanted = ListPartitionReassignmentsRequest.ListPartitionReassignmentsTopics()
        wanted.name = "t"
        wanted.partitionIndexes = [1]
        filtered.topics = [wanted]
        #expect(await fixture.handlers.listPartitionReassignments(filtered, version: 0).topics.isEmpty)

        let cancelled = await fixture.handlers.alterPartitionReassignments(Self.alter("t", [(0, nil)]), version: 0)
        #expect(cancelled.responses.first?.partitions.map(\.errorCode) == [Code.none])
        #expect(await fixture.handlers.listPartitionReassignments(ListPartitionReassignmentsRequest(), version: 0).topics.isEmpty)
        let again = await fixture.handlers.alterPartitionReassignments(Self.alter("t", [(0, nil)]), version: 0)
        #expect(again.responses.first?.partitions.map(\.errorCode) == [Code.noReassignmentInProgress])
    }

    @Test func controllerUnreachable() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed("t")
        await fixture.controller.failWith(.unavailable("down"))
        let response = try wire(
            await fixture.handlers.alterPartitionReassignments(Self.alter("t", [(0, [2])]), version: 0), version: 0)
        #expect(response.errorCode == Code.requestTimedOut)
        #expect(response.responses.first?.partitions.map(\.errorCode) == [Code.requestTimedOut])
    }
}
