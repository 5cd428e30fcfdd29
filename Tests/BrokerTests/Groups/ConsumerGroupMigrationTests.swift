@testable import BrokerCore
import KafkaProtocol
import NIOCore
import Testing

/// KIP-848's online conversion: a live classic group taken over by a consumer-protocol member,
/// its classic members reconciled through JoinGroup/SyncGroup/Heartbeat, and the group turned
/// classic again when the consumer-protocol member leaves.
@Suite struct ConsumerGroupMigrationTests {
    static let catalog = ConsumerGroupTests.catalog()
    static let topic = ConsumerGroupTests.topicA

    static func subscription(_ topics: [String], owned: [Int32] = []) -> ByteBuffer {
        var value = ConsumerProtocolSubscription()
        value.topics = topics
        if !owned.isEmpty {
            var item = ConsumerProtocolSubscription.TopicPartition()
            item.topic = "orders"
            item.partitions = owned
            value.ownedPartitions = [item]
        }
        var bytes = ByteBuffer()
        bytes.writeKafkaInteger(Int16(1))
        try? value.encode(to: &bytes, version: 1)
        return bytes
    }

    static func assignment(_ partitions: [Int32]) -> ByteBuffer {
        var value = ConsumerProtocolAssignment()
        var item = ConsumerProtocolAssignment.TopicPartition()
        item.topic = "orders"
        item.partitions = partitions
        value.assignedPartitions = [item]
        var bytes = ByteBuffer()
        bytes.writeKafkaInteger(Int16(0))
        try? value.encode(to: &bytes, version: 0)
        return bytes
    }

    static func partitions(_ bytes: ByteBuffer) throws -> [Int32] {
        var bytes = bytes
        let version: Int16 = try bytes.readKafkaInteger()
        return try ConsumerProtocolAssignment(from: &bytes, version: version).assignedPartitions.flatMap(\.partitions).sorted()
    }

    /// A stable classic group of generation 4: c1 holds 0-2, c2 holds 3-5 of "orders".
    static func classicGroup() -> ClassicGroup {
        let members = [("c1", [Int32(0), 1, 2]), ("c2", [3, 4, 5])].map { id, owned in
            GroupMetadataValue.Member(
                memberId: id, groupInstanceId: nil, clientId: "app", clientHost: "/127.0.0.1", rebalanceTimeoutMs: 5_000, sessionTimeoutMs: 10_000,
                subscription: subscription(["orders"]), assignment: assignment(owned))
        }
        let value = GroupMetadataValue(protocolType: "consumer", generationId: 4, protocolName: "range", leaderId: "c1", stateTimestamp: 0, members: members)
        return ClassicGroup(groupId: "g", config: ConsumerGroupTests.config, loaded: value, offsets: [:], now: 0)
    }

    static func join(_ memberId: String, owned: [Int32] = []) -> JoinInput {
        JoinInput(
            memberId: memberId, sessionTimeoutMs: 10_000, rebalanceTimeoutMs: 5_000, protocolType: "consumer",
            protocols: [GroupProtocol(name: "range", metadata: subscription(["orders"], owned: owned))], requireKnownMemberId: true)
    }

    @Test func aLiveClassicGroupIsTakenOverAndItsMembersReconcileThroughTheClassicProtocol() throws {
        var group = try #require(ConsumerGroup(upgrading: Self.classicGroup(), catalog: Self.catalog, now: 0))
        #expect(group.groupEpoch == 4)
        #expect(group.members["c1"]?.assigned == [Self.topic: [0, 1, 2]])
        #expect(group.members["c2"]?.memberEpoch == 4)
        #expect(group.onlyClassicMembers)
        #expect(group.classicHeartbeat(memberId: "c1", generationId: 4, catalog: Self.catalog, now: 10) == .none, "nothing changed yet")

        // A consumer-protocol member joins: the classic members must give up a partition each.
        let modern = group.heartbeat(ConsumerGroupTests.join("m1"), newMemberId: "x", catalog: Self.catalog, now: 20)
        #expect(modern.memberEpoch == 5)
        #expect(modern.assignment == [:], "all partitions are still held")
        #expect(!group.onlyClassicMembers)
        for id in ["c1", "c2"] {
            #expect(group.classicHeartbeat(memberId: id, generationId: 4, catalog: Self.catalog, now: 30) == .rebalanceInProgress)
            // Eager members revoked everything before rejoining.
            guard case .joined(let memberId, let generation, let name) = group.classicJoin(Self.join(id), newMemberId: "x", catalog: Self.catalog, now: 40) else {
                Issue.record("\(id) did not rejoin")
                return
            }
            #expect(memberId == id)
            #expect(generation == 5)
            #expect(name == "range")
            let synced = group.classicSync(memberId: id, generationId: 5, catalog: Self.catalog, now: 50)
            #expect(synced.error == .none)
            #expect(try Self.partitions(synced.assignment).count == 2)
            #expect(group.classicSync(memberId: id, generationId: 4, catalog: Self.catalog, now: 50).error == .illegalGeneration)
            #expect(group.classicHeartbeat(memberId: id, generationId: 5, catalog: Self.catalog, now: 60) == .none)
        }
        let taken = group.heartbeat(ConsumerGroupTests.beat("m1", epoch: 5, owned: [:]), newMemberId: "x", catalog: Self.catalog, now: 70)
        #expect(taken.assignment.map(Assignments.count) == 2)
        #expect(group.state == .stable)

        // The stored form keeps the classic members' protocols.
        var encoded = ByteBuffer()
        ConsumerGroupRecordValue(group).encode(into: &encoded)
        let decoded = try #require(try ConsumerGroupRecordValue.decode(&encoded))
        #expect(decoded == ConsumerGroupRecordValue(group))
        #expect(decoded.members.first { $0.memberId == "c1" }?.classic?.sessionTimeoutMs == 10_000)
    }

    @Test func whenTheLastConsumerProtocolMemberLeavesTheGroupIsClassicAgain() throws {
        var group = try #require(ConsumerGroup(upgrading: Self.classicGroup(), catalog: Self.catalog, now: 0))
        _ = group.heartbeat(ConsumerGroupTests.join("m1"), newMemberId: "x", catalog: Self.catalog, now: 10)
        #expect(group.downgraded(offsets: [:], catalog: Self.catalog, now: 20) == nil, "a consumer-protocol member is still there")
        _ = group.heartbeat(ConsumerGroupTests.beat("m1", epoch: ConsumerGroup.leaveEpoch, owned: nil), newMemberId: "x", catalog: Self.catalog, now: 30)
        #expect(group.onlyClassicMembers)
        var classic = try #require(group.downgraded(offsets: [OffsetKey(topic: "orders", partition: 0): CommittedOffset(offset: 7, leaderEpoch: 0, metadata: nil, commitTimestamp: 0)], catalog: Self.catalog, now: 40))
        #expect(classic.members.map(\.memberId) == ["c1", "c2"])
        #expect(classic.generationId == group.groupEpoch)
        #expect(try Self.partitions(classic.member("c1")!.assignment) == [0, 1, 2])
        #expect(classic.offsets.count == 1)
        _ = classic.prepareRebalance(now: 50)
        #expect(classic.state == .preparingRebalance, "the members rejoin and choose an assignor again")
    }

    @Test func newClassicMembersJoinAConsumerGroupThroughTheMemberIdRound() {
        var group = ConsumerGroup(groupId: "g", config: ConsumerGroupTests.config)
        _ = group.heartbeat(ConsumerGroupTests.join("m1"), newMemberId: "x", catalog: Self.catalog, now: 0)
        #expect(group.classicJoin(Self.join("stranger"), newMemberId: "x", catalog: Self.catalog, now: 1) == .failed(.unknownMemberId))
        #expect(group.classicJoin(Self.join(""), newMemberId: "c9", catalog: Self.catalog, now: 2) == .memberIdRequired("c9"))
        guard case .joined(let id, _, _) = group.classicJoin(Self.join("c9"), newMemberId: "x", catalog: Self.catalog, now: 3) else {
            Issue.record("c9 did not join")
            return
        }
        #expect(id == "c9")
        #expect(group.members["c9"]?.classic != nil)
        var wrongType = Self.join("c9")
        wrongType.protocolType = "connect"
        #expect(group.classicJoin(wrongType, newMemberId: "x", catalog: Self.catalog, now: 4) == .failed(.inconsistentGroupProtocol))
        #expect(group.classicLeave([(memberId: "c9", groupInstanceId: nil)]) == [.none])
        #expect(group.members["c9"] == nil)
    }
}
