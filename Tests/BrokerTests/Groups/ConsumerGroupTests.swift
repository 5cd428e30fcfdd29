@testable import BrokerCore
import KafkaProtocol
import NIOCore
import TestKit
import Testing

/// The consumer-protocol (KIP-848) group state machine: joins, epochs, incremental reconciliation,
/// static members, regular expressions, timeouts, its stored form, and a seeded simulation of
/// members that join, leave, crash and revoke late, checking after every step that no two members
/// ever own one partition.
@Suite struct ConsumerGroupTests {
    static let topicA = KafkaUUID(high: 1, low: 1)
    static let topicB = KafkaUUID(high: 2, low: 2)

    static func catalog(_ version: UInt64 = 1, a: Int32 = 6, b: Int32? = nil) -> TopicCatalog {
        var topics = [TopicCatalog.Topic(name: "orders", id: topicA, partitionCount: a)]
        if let b { topics.append(TopicCatalog.Topic(name: "orders-eu", id: topicB, partitionCount: b)) }
        return TopicCatalog(version: version, topics: topics)
    }

    static var config: GroupConfig {
        var config = GroupConfig()
        config.consumerSessionTimeoutMs = 10_000
        config.consumerHeartbeatIntervalMs = 500
        return config
    }

    static func join(_ memberId: String, topics: [String]? = ["orders"], regex: String? = nil, instance: String? = nil) -> ConsumerHeartbeat {
        ConsumerHeartbeat(
            memberId: memberId, memberEpoch: 0, instanceId: instance, rebalanceTimeoutMs: 5_000, subscribedTopicNames: topics,
            subscribedTopicRegex: regex, ownedPartitions: [])
    }

    static func beat(_ memberId: String, epoch: Int32, owned: MemberAssignment?) -> ConsumerHeartbeat {
        ConsumerHeartbeat(memberId: memberId, memberEpoch: epoch, ownedPartitions: owned.map(Assignments.partitions))
    }

    @Test func aLoneMemberGetsEveryPartitionAndASecondGetsHalfAfterTheFirstRevokes() throws {
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        let first = group.heartbeat(Self.join("m1"), newMemberId: "x", catalog: Self.catalog(), now: 0)
        #expect(first.error == .none)
        #expect(first.memberId == "m1")
        #expect(first.memberEpoch == 1)
        #expect(first.heartbeatIntervalMs == 500)
        #expect(first.assignment == [Self.topicA: Set(0..<6)])
        let changed = group.takeChanged()
        #expect(changed)

        let second = group.heartbeat(Self.join("m2"), newMemberId: "x", catalog: Self.catalog(), now: 10)
        #expect(second.memberEpoch == 2)
        #expect(second.assignment == [:], "m1 still holds every partition")
        #expect(group.state == .reconciling)
        #expect(second.heartbeatIntervalMs == 100, "members heartbeat five times as often until the group is stable")

        // m1 is told to keep half; until it says it let go, m2 gets nothing.
        let keep = group.heartbeat(Self.beat("m1", epoch: 1, owned: [Self.topicA: Set(0..<6)]), newMemberId: "x", catalog: Self.catalog(), now: 20)
        let kept = try #require(keep.assignment)
        #expect(keep.memberEpoch == 1, "m1 stays at its epoch until it revoked")
        #expect(Assignments.count(kept) == 3)
        let waiting = group.heartbeat(Self.beat("m2", epoch: 2, owned: [:]), newMemberId: "x", catalog: Self.catalog(), now: 30)
        #expect(waiting.assignment == [:], "nothing for m2 yet")

        let acknowledged = group.heartbeat(Self.beat("m1", epoch: 1, owned: kept), newMemberId: "x", catalog: Self.catalog(), now: 40)
        #expect(acknowledged.memberEpoch == 2)
        let now = group.heartbeat(Self.beat("m2", epoch: 2, owned: [:]), newMemberId: "x", catalog: Self.catalog(), now: 50)
        #expect(now.assignment == Assignments.subtracting([Self.topicA: Set(0..<6)], kept))
        #expect(group.state == .stable)
    }

    @Test func requestsThatBreakTheRulesGetTheirErrors() {
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        let catalog = Self.catalog()
        var noTimeout = Self.join("m1")
        noTimeout.rebalanceTimeoutMs = -1
        let result2 = group.heartbeat(noTimeout, newMemberId: "x", catalog: catalog, now: 0)
        #expect(result2.error == .invalidRequest)
        let result3 = group.heartbeat(Self.join("m1", topics: nil), newMemberId: "x", catalog: catalog, now: 0)
        #expect(result3.error == .invalidRequest)
        var assignor = Self.join("m1")
        assignor.serverAssignor = "sticky-ish"
        let result4 = group.heartbeat(assignor, newMemberId: "x", catalog: catalog, now: 0)
        #expect(result4.error == .unsupportedAssignor)
        let result5 = group.heartbeat(Self.join("m1", topics: nil, regex: "orders["), newMemberId: "x", catalog: catalog, now: 0)
        #expect(result5.error == .invalidRegularExpression)
        let result6 = group.heartbeat(Self.beat("ghost", epoch: 3, owned: nil), newMemberId: "x", catalog: catalog, now: 0)
        #expect(result6.error == .unknownMemberId)
        #expect(group.members.isEmpty)
        let changedByRefusals = group.takeChanged()
        #expect(!changedByRefusals, "refused requests change nothing")

        // v0: the coordinator names the member.
        let named = group.heartbeat(Self.join(""), newMemberId: "given-1", catalog: catalog, now: 0)
        #expect(named.memberId == "given-1")
        let result7 = group.heartbeat(Self.beat("given-1", epoch: 7, owned: nil), newMemberId: "x", catalog: catalog, now: 1)
        #expect(result7.error == .fencedMemberEpoch)
    }

    @Test func aMemberWhoseAnswerWasLostMayRepeatItsPreviousEpoch() {
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        let catalog = Self.catalog()
        _ = group.heartbeat(Self.join("m1"), newMemberId: "x", catalog: catalog, now: 0)
        // Partitions added: m1 moves to epoch 2, but pretend it never heard.
        let grown = Self.catalog(2, a: 8)
        let moved = group.heartbeat(Self.beat("m1", epoch: 1, owned: [Self.topicA: Set(0..<6)]), newMemberId: "x", catalog: grown, now: 10)
        #expect(moved.memberEpoch == 2)
        #expect(moved.assignment == [Self.topicA: Set(0..<8)])
        let again = group.heartbeat(Self.beat("m1", epoch: 1, owned: [Self.topicA: Set(0..<6)]), newMemberId: "x", catalog: grown, now: 20)
        #expect(again.error == .none)
        #expect(again.memberEpoch == 2)
        let result8 = group.heartbeat(Self.beat("m1", epoch: 1, owned: nil), newMemberId: "x", catalog: grown, now: 30)
        #expect(result8.error == .fencedMemberEpoch)
    }

    @Test func aStaticMemberThatComesBackKeepsItsPartitionsWithoutARebalance() {
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        let catalog = Self.catalog()
        _ = group.heartbeat(Self.join("a1", instance: "host-a"), newMemberId: "x", catalog: catalog, now: 0)
        _ = group.heartbeat(Self.join("b1", instance: "host-b"), newMemberId: "x", catalog: catalog, now: 0)
        for round in 1...4 {
            for id in ["a1", "b1"] {
                let member = group.members[id]!
                _ = group.heartbeat(Self.beat(id, epoch: member.memberEpoch, owned: member.assigned), newMemberId: "x", catalog: catalog, now: Int64(round))
            }
        }
        #expect(group.state == .stable)
        let held = group.members["a1"]!.assigned
        let epoch = group.groupEpoch

        let result9 = group.heartbeat(Self.join("a2", instance: "host-a"), newMemberId: "x", catalog: catalog, now: 5)
        #expect(result9.error == .unreleasedInstanceId)
        var away = Self.beat("a1", epoch: group.members["a1"]!.memberEpoch, owned: nil)
        away.memberEpoch = ConsumerGroup.staticLeaveEpoch
        away.instanceId = "host-a"
        let result10 = group.heartbeat(away, newMemberId: "x", catalog: catalog, now: 6)
        #expect(result10.memberEpoch == ConsumerGroup.staticLeaveEpoch)
        let back = group.heartbeat(Self.join("a2", instance: "host-a"), newMemberId: "x", catalog: catalog, now: 7)
        #expect(back.error == .none)
        #expect(back.assignment == held)
        #expect(group.groupEpoch == epoch, "no rebalance")
        #expect(group.members["a1"] == nil)

        // Away for longer than the session: it is removed and the others take its partitions.
        away.memberId = "a2"
        away.memberEpoch = ConsumerGroup.staticLeaveEpoch
        _ = group.heartbeat(away, newMemberId: "x", catalog: catalog, now: 8)
        _ = group.heartbeat(Self.beat("b1", epoch: group.members["b1"]!.memberEpoch, owned: nil), newMemberId: "x", catalog: catalog, now: 9_000)
        let result11 = group.expire(now: 10_008)
        #expect(result11 == ["a2"])
        let rest = group.heartbeat(Self.beat("b1", epoch: group.members["b1"]!.memberEpoch, owned: group.members["b1"]!.assigned), newMemberId: "x", catalog: catalog, now: 10_010)
        #expect(rest.assignment == [Self.topicA: Set(0..<6)])
    }

    @Test func regularExpressionsFollowTopicsAsTheyAreCreated() {
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        let first = group.heartbeat(Self.join("m1", topics: nil, regex: "orders.*"), newMemberId: "x", catalog: Self.catalog(), now: 0)
        #expect(first.assignment == [Self.topicA: Set(0..<6)])
        let epoch = group.groupEpoch
        let grown = group.heartbeat(Self.beat("m1", epoch: first.memberEpoch, owned: first.assignment), newMemberId: "x", catalog: Self.catalog(2, b: 2), now: 10)
        #expect(grown.assignment == [Self.topicA: Set(0..<6), Self.topicB: [0, 1]])
        #expect(group.groupEpoch == epoch + 1)
        #expect(group.subscribedTopicNames == ["orders", "orders-eu"])
    }

    @Test func aMemberThatDoesNotRevokeInTimeIsRemoved() {
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        let catalog = Self.catalog()
        _ = group.heartbeat(Self.join("m1"), newMemberId: "x", catalog: catalog, now: 0)
        _ = group.heartbeat(Self.join("m2"), newMemberId: "x", catalog: catalog, now: 0)
        _ = group.heartbeat(Self.beat("m1", epoch: 1, owned: [Self.topicA: Set(0..<6)]), newMemberId: "x", catalog: catalog, now: 100)
        #expect(group.members["m1"]?.state == .unrevokedPartitions)
        // It keeps heartbeating but never lets go; its rebalance timeout is 5 s.
        _ = group.heartbeat(Self.beat("m1", epoch: 1, owned: [Self.topicA: Set(0..<6)]), newMemberId: "x", catalog: catalog, now: 4_000)
        _ = group.heartbeat(Self.beat("m2", epoch: 2, owned: [:]), newMemberId: "x", catalog: catalog, now: 4_000)
        let result12 = group.expire(now: 5_099)
        #expect(result12 == [])
        let result13 = group.expire(now: 5_100)
        #expect(result13 == ["m1"])
        let taken = group.heartbeat(Self.beat("m2", epoch: 2, owned: [:]), newMemberId: "x", catalog: catalog, now: 5_200)
        #expect(taken.assignment == [Self.topicA: Set(0..<6)])
    }

    @Test func theStoredFormRebuildsTheGroup() throws {
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        _ = group.heartbeat(Self.join("m1", instance: "i1"), newMemberId: "x", catalog: Self.catalog(b: 3), now: 0)
        _ = group.heartbeat(Self.join("m2", topics: ["orders", "orders-eu"]), newMemberId: "x", catalog: Self.catalog(b: 3), now: 0)
        _ = group.heartbeat(Self.beat("m1", epoch: 1, owned: [Self.topicA: Set(0..<6)]), newMemberId: "x", catalog: Self.catalog(b: 3), now: 1)
        let value = ConsumerGroupRecordValue(group)
        let (key, encoded) = GroupRecord.consumerGroup(group: "g", value: value).encoded()
        let decoded = try #require(try GroupRecord.decode(key: key, value: encoded))
        #expect(decoded == .consumerGroup(group: "g", value: value))

        var replay = GroupReplay()
        replay.apply(decoded, position: 0)
        let loaded = try #require(replay.consumerGroups(config: Self.config, now: 50)["g"])
        #expect(loaded.groupEpoch == group.groupEpoch)
        #expect(loaded.targetAssignment == group.targetAssignment)
        #expect(loaded.owners == group.owners)
        #expect(loaded.staticMembers == ["i1": "m1"])
        #expect(loaded.members.mapValues(\.persisted) == group.members.mapValues(\.persisted))
        #expect(loaded.members["m1"]?.state == .unrevokedPartitions)
        let deadline = try #require(loaded.nextDeadline)
        #expect(deadline == 5_050, "m1's revocation deadline restarts on load")

        replay.apply(.consumerGroup(group: "g", value: nil), position: 1)
        #expect(replay.consumerGroups(config: Self.config, now: 0).isEmpty)
        var truncated = try #require(encoded)
        truncated.moveWriterIndex(to: truncated.writerIndex - 3)
        #expect(throws: ProtocolError.self) { _ = try GroupRecord.decode(key: key, value: truncated) }
    }

    // MARK: Simulation

    /// A client as librdkafka behaves: it applies an assignment it was sent at some later step
    /// (revoking what it lost, then taking the rest), and reports what it owns.
    struct Client {
        var memberId: String
        var epoch: Int32 = 0
        var owned: MemberAssignment = [:]
        var received: MemberAssignment?
        var joined = false
        var topics: [String]
    }

    @Test(arguments: 0..<200) func noTwoMembersEverOwnOnePartition(seed: Int) throws {
        var random = SeededRandom(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        var group = ConsumerGroup(groupId: "g", config: Self.config)
        var clients: [Client] = []
        var next = 0
        var now: Int64 = 0
        var catalog = Self.catalog(1, a: Int32(random.between(1, 12)), b: Int32(random.between(1, 6)))
        var version: UInt64 = 1

        func step(_ index: Int) {
            var client = clients[index]
            if let received = client.received, random.chance(700) {
                client.owned = received
                client.received = nil
            }
            let request = client.joined
                ? Self.beat(client.memberId, epoch: client.epoch, owned: random.chance(800) ? client.owned : nil)
                : Self.join(client.memberId, topics: client.topics)
            let outcome = group.heartbeat(request, newMemberId: "unused", catalog: catalog, now: now)
            _ = group.takeChanged()
            if outcome.error == .none {
                client.joined = true
                client.epoch = outcome.memberEpoch
                if let assignment = outcome.assignment { client.received = assignment }
            } else {
                // Fenced or forgotten: a real client drops everything and joins again.
                client = Client(memberId: client.memberId, topics: client.topics)
            }
            clients[index] = client
        }

        for _ in 0..<400 {
            now += Int64(random.between(1, 400))
            switch random.below(100) {
            case 0..<8 where clients.count < 8:
                next += 1
                clients.append(Client(memberId: "m\(next)", topics: random.chance(500) ? ["orders"] : ["orders", "orders-eu"]))
                step(clients.count - 1)
            case 8..<11 where !clients.isEmpty:
                let index = random.below(clients.count)
                _ = group.heartbeat(Self.beat(clients[index].memberId, epoch: ConsumerGroup.leaveEpoch, owned: nil), newMemberId: "", catalog: catalog, now: now)
                clients.remove(at: index)
            case 11..<13 where !clients.isEmpty:
                // Crashes: the coordinator notices at the session timeout.
                clients.remove(at: random.below(clients.count))
            case 13:
                version += 1
                catalog = Self.catalog(version, a: Int32(random.between(1, 12)), b: Int32(random.between(1, 6)))
            default:
                if !clients.isEmpty { step(random.below(clients.count)) }
            }
            _ = group.expire(now: now)
            try Self.checkExclusive(group, clients)
        }

        // Everybody heartbeats every second until the crashed are gone and the group settles; then
        // every partition has exactly one owner.
        for _ in 0..<16 {
            now += 1_000
            _ = group.expire(now: now)
            for index in clients.indices {
                if let received = clients[index].received {
                    clients[index].owned = received
                    clients[index].received = nil
                }
                step(index)
                try Self.checkExclusive(group, clients)
            }
        }
        guard !clients.isEmpty else { return }
        #expect(group.state == .stable, "seed \(seed)")
        let owned = clients.flatMap { Assignments.partitions($0.owned) }
        let subscribed = Set(clients.flatMap(\.topics))
        let expected = Set(subscribed.compactMap { catalog.byName[$0] }.flatMap { topic in
            (0..<topic.partitionCount).map { TopicIdPartition(topicId: topic.id, partition: $0) }
        })
        #expect(Set(owned) == expected, "seed \(seed): every partition assigned")
        #expect(owned.count == expected.count, "seed \(seed): once")
    }

    /// What each live client owns is its member's (assigned ∪ pending revocation), and those never overlap.
    static func checkExclusive(_ group: ConsumerGroup, _ clients: [Client]) throws {
        var holder: [TopicIdPartition: String] = [:]
        for id in group.members.keys.sorted() {
            let member = group.members[id]!
            for partition in Assignments.partitions(Assignments.union(member.assigned, member.pendingRevocation)) {
                #expect(holder[partition] == nil, "\(partition) held by \(holder[partition] ?? "") and \(id)")
                holder[partition] = id
            }
        }
        for client in clients where client.joined {
            guard let member = group.members[client.memberId] else { continue }
            let holds = Assignments.union(member.assigned, member.pendingRevocation)
            #expect(Assignments.isSubset(client.owned, of: holds), "\(client.memberId) owns \(client.owned) beyond \(holds)")
        }
    }
}
