// Over 400 lines on purpose: one suite walking the classic group protocol step by step (join, sync,
// heartbeat, leave, static members, expiry), each test building on the same small fixtures.
@testable import BrokerCore
import KafkaProtocol
import NIOCore
import Testing

/// Drives one `ClassicGroup` with explicit time, collecting the responses it hands out.
struct GroupHarness {
    var group: ClassicGroup
    var now: Int64 = 1_000_000
    var nextToken: UInt64 = 1
    var joins: [UInt64: JoinOutcome] = [:]
    var syncs: [UInt64: SyncOutcome] = [:]
    var stores: [StoreReason] = []

    init(initialDelayMs: Int64 = 0) {
        var config = GroupConfig()
        config.initialRebalanceDelayMs = initialDelayMs
        group = ClassicGroup(groupId: "g", config: config, now: now)
    }

    static func metadata(_ member: String, _ name: String) -> ByteBuffer { ByteBuffer(string: "\(member):\(name)") }

    mutating func absorb(_ actions: [GroupAction]) {
        for action in actions {
            switch action {
            case .joinResponse(let token, let outcome):
                #expect(joins[token] == nil, "join \(token) answered twice")
                joins[token] = outcome
            case .syncResponse(let token, let outcome):
                #expect(syncs[token] == nil, "sync \(token) answered twice")
                syncs[token] = outcome
            case .store(let reason):
                stores.append(reason)
            }
        }
    }

    /// Sends a JoinGroup; returns its token (look the answer up in `joins`).
    @discardableResult
    mutating func join(
        _ memberId: String, newId: String = "", instance: String? = nil, protocols: [String] = ["range"], v4: Bool = true,
        session: Int32 = 10_000, rebalance: Int32 = 30_000, skip: Bool = false
    ) -> UInt64 {
        let token = nextToken
        nextToken += 1
        let label = memberId.isEmpty ? newId : memberId
        let input = JoinInput(
            memberId: memberId, groupInstanceId: instance, sessionTimeoutMs: session, rebalanceTimeoutMs: rebalance, protocolType: "consumer",
            protocols: protocols.map { GroupProtocol(name: $0, metadata: Self.metadata(instance ?? label, $0)) }, requireKnownMemberId: v4,
            supportsSkipAssignment: skip)
        absorb(group.join(input, token: token, newMemberId: newId, now: now))
        return token
    }

    @discardableResult
    mutating func sync(_ memberId: String, generation: Int32, assignments: [String: String] = [:], instance: String? = nil) -> UInt64 {
        let token = nextToken
        nextToken += 1
        absorb(
            group.sync(
                memberId: memberId, groupInstanceId: instance, generationId: generation, protocolType: nil, protocolName: nil,
                assignments: assignments.sorted { $0.key < $1.key }.map { ($0.key, ByteBuffer(string: $0.value)) }, token: token, now: now))
        return token
    }

    /// Completes every pending metadata write.
    mutating func finishStores(success: Bool = true) {
        let pending = stores
        stores = []
        for reason in pending { absorb(group.stored(reason, success: success, now: now)) }
    }

    mutating func advance(_ ms: Int64) {
        now += ms
        absorb(group.tick(now: now))
    }

    mutating func heartbeat(_ memberId: String, generation: Int32, instance: String? = nil) -> KafkaErrorCode {
        group.heartbeat(memberId: memberId, groupInstanceId: instance, generationId: generation, now: now)
    }

    /// A stable group of `ids` (dynamic members, KIP-394 round included), `ids[0]` the leader,
    /// each assigned "A-<id>".
    mutating func stableGroup(_ ids: [String], protocols: [String] = ["range"]) {
        for id in ids {
            let first = join("", newId: id, protocols: protocols)
            #expect(joins[first]?.error == .memberIdRequired)
            #expect(joins[first]?.memberId == id)
        }
        let tokens = ids.map { join($0, protocols: protocols) }
        for token in tokens { #expect(joins[token]?.error == KafkaErrorCode.none) }
        let generation = group.generationId
        let syncTokens = ids.map { id in sync(id, generation: generation, assignments: id == ids[0] ? Dictionary(uniqueKeysWithValues: ids.map { ($0, "A-\($0)") }) : [:]) }
        finishStores()
        for (id, token) in zip(ids, syncTokens) { #expect(syncs[token]?.assignment == ByteBuffer(string: "A-\(id)")) }
        #expect(group.state == .stable)
    }
}

@Suite struct ClassicGroupTests {
    @Test func memberIdRoundThenJoinElectsLeaderAndSyncHandsOutAssignments() {
        var h = GroupHarness()
        let first = h.join("", newId: "m1")
        #expect(h.joins[first]?.error == .memberIdRequired)
        #expect(h.joins[first]?.memberId == "m1")
        #expect(h.group.state == .empty)
        #expect(h.group.pendingMemberIds == ["m1"])

        let second = h.join("m1")
        let joined = h.joins[second]
        #expect(joined?.error == KafkaErrorCode.none)
        #expect(joined?.generationId == 1)
        #expect(joined?.leaderId == "m1")
        #expect(joined?.protocolName == "range")
        #expect(joined?.protocolType == "consumer")
        #expect(joined?.members.map(\.memberId) == ["m1"])
        #expect(joined?.members.first?.metadata == GroupHarness.metadata("m1", "range"))
        #expect(h.group.state == .completingRebalance)

        let sync = h.sync("m1", generation: 1, assignments: ["m1": "everything"])
        #expect(h.syncs[sync] == nil, "answered before the assignment is durable")
        #expect(h.stores == [.assignment(generation: 1)])
        h.finishStores()
        #expect(h.syncs[sync]?.assignment == ByteBuffer(string: "everything"))
        #expect(h.group.state == .stable)
    }

    @Test func oldClientsJoinWithoutTheMemberIdRound() {
        var h = GroupHarness()
        let token = h.join("", newId: "old-1", v4: false)
        #expect(h.joins[token]?.error == KafkaErrorCode.none)
        #expect(h.joins[token]?.memberId == "old-1")
        #expect(h.group.generationId == 1)
    }

    @Test func secondMemberTriggersRebalanceAndOnlyTheLeaderGetsMembers() {
        var h = GroupHarness()
        h.stableGroup(["m1"])
        #expect(h.join("", newId: "m2") > 0)
        let joinM2 = h.join("m2")
        #expect(h.group.state == .preparingRebalance)
        #expect(h.joins[joinM2] == nil, "waits for the leader to rejoin")
        #expect(h.heartbeat("m1", generation: 1) == .rebalanceInProgress)
        let joinM1 = h.join("m1")
        #expect(h.group.generationId == 2)
        #expect(h.joins[joinM1]?.members.map(\.memberId) == ["m1", "m2"])
        #expect(h.joins[joinM2]?.members == [])
        #expect(h.joins[joinM2]?.leaderId == "m1")

        // A follower's sync waits for the leader's.
        let syncM2 = h.sync("m2", generation: 2)
        #expect(h.syncs[syncM2] == nil)
        #expect(h.heartbeat("m2", generation: 2) == KafkaErrorCode.none)
        let syncM1 = h.sync("m1", generation: 2, assignments: ["m1": "a", "m2": "b"])
        h.finishStores()
        #expect(h.syncs[syncM1]?.assignment == ByteBuffer(string: "a"))
        #expect(h.syncs[syncM2]?.assignment == ByteBuffer(string: "b"))
        #expect(h.syncs[syncM2]?.protocolName == "range")
    }

    @Test func heartbeatsCheckMemberAndGeneration() {
        var h = GroupHarness()
        h.stableGroup(["m1", "m2"])
        let generation = h.group.generationId
        #expect(h.heartbeat("m1", generation: generation) == KafkaErrorCode.none)
        #expect(h.heartbeat("m1", generation: generation - 1) == .illegalGeneration)
        #expect(h.heartbeat("m1", generation: generation + 1) == .illegalGeneration)
        #expect(h.heartbeat("nobody", generation: generation) == .unknownMemberId)
        // Sync with a stale generation and joins with unknown ids are refused too.
        let stale = h.sync("m2", generation: generation - 1)
        #expect(h.syncs[stale]?.error == .illegalGeneration)
        let unknown = h.join("ghost")
        #expect(h.joins[unknown]?.error == .unknownMemberId)
    }

    @Test func expiredSessionRemovesTheMemberAndRebalances() {
        var h = GroupHarness()
        h.stableGroup(["m1", "m2"])
        let generation = h.group.generationId
        h.advance(6_000)
        #expect(h.heartbeat("m1", generation: generation) == KafkaErrorCode.none)
        h.advance(4_500)
        #expect(h.group.member("m2") == nil, "m2 sent nothing for 10.5 s")
        #expect(h.group.state == .preparingRebalance)
        #expect(h.heartbeat("m2", generation: generation) == .unknownMemberId)
        let rejoin = h.join("m1")
        #expect(h.joins[rejoin]?.generationId == generation + 1)
        #expect(h.joins[rejoin]?.members.map(\.memberId) == ["m1"])
    }

    @Test func rebalanceTimeoutDropsMembersThatDoNotRejoin() {
        var h = GroupHarness()
        h.stableGroup(["m1", "m2"])
        _ = h.join("", newId: "m3")
        let m3 = h.join("m3", rebalance: 5_000)
        // m1 keeps heartbeating but never rejoins; m2 rejoins.
        let m2 = h.join("m2", rebalance: 5_000)
        #expect(h.joins[m2] == nil)
        // m1 stays alive by heartbeating, but the rebalance (30 s, the largest member timeout) ends without it.
        for _ in 0..<7 {
            h.advance(4_000)
            #expect(h.heartbeat("m1", generation: 1) == .rebalanceInProgress)
        }
        #expect(h.joins[m2] == nil)
        h.advance(2_500)
        #expect(h.joins[m2]?.error == KafkaErrorCode.none)
        #expect(h.group.member("m1") == nil)
        #expect(h.group.leaderId == "m2", "the leader left: a member that rejoined leads")
        #expect(h.joins[m2]?.members.map(\.memberId).sorted() == ["m2", "m3"])
        #expect(h.joins[m3]?.leaderId == "m2")
    }

    @Test func leaveTriggersRebalanceAndTheLastLeaveEmptiesTheGroup() {
        var h = GroupHarness()
        h.stableGroup(["m1", "m2"])
        let generation = h.group.generationId
        let (results, actions) = h.group.leave([("m2", nil), ("ghost", nil)], now: h.now)
        h.absorb(actions)
        #expect(results == [.none, .unknownMemberId])
        #expect(h.group.state == .preparingRebalance)
        let rejoin = h.join("m1")
        #expect(h.joins[rejoin]?.generationId == generation + 1)
        let (last, lastActions) = h.group.leave([("m1", nil)], now: h.now)
        h.absorb(lastActions)
        #expect(last == [.none])
        #expect(h.group.state == .empty)
        #expect(h.group.generationId == generation + 2)
        #expect(h.stores.contains(.emptyGeneration(generation: generation + 2)))
    }

    @Test func staticMemberRejoinKeepsTheAssignmentWithoutRebalance() {
        var h = GroupHarness()
        let s1 = h.join("", newId: "s1-a", instance: "i1")
        #expect(h.joins[s1]?.error == KafkaErrorCode.none, "static members skip the member id round")
        #expect(h.joins[s1]?.generationId == 1)
        let s2 = h.join("", newId: "s2-a", instance: "i2")
        let rejoin = h.join("s1-a", instance: "i1")
        #expect(h.joins[rejoin]?.generationId == 2)
        #expect(h.joins[s2]?.generationId == 2)
        let generation: Int32 = 2
        #expect(h.group.leaderId == "s1-a")
        let syncLeader = h.sync("s1-a", generation: generation, assignments: ["s1-a": "A1", "s2-a": "A2"], instance: "i1")
        let syncOther = h.sync("s2-a", generation: generation, instance: "i2")
        h.finishStores()
        #expect(h.syncs[syncLeader]?.assignment == ByteBuffer(string: "A1"))
        #expect(h.syncs[syncOther]?.assignment == ByteBuffer(string: "A2"))
        #expect(h.group.state == .stable)

        // s2 restarts: same instance id, no member id, same protocols.
        let restart = h.join("", newId: "s2-b", instance: "i2")
        #expect(h.joins[restart] == nil, "answered once the replacement is durable")
        #expect(h.stores.count == 1)
        h.finishStores()
        let outcome = try! #require(h.joins[restart])
        #expect(outcome.error == KafkaErrorCode.none)
        #expect(outcome.memberId == "s2-b")
        #expect(outcome.generationId == generation, "no rebalance")
        #expect(outcome.leaderId == "s1-a")
        #expect(outcome.members == [])
        #expect(h.group.state == .stable)
        #expect(h.group.generationId == generation)
        // The old member id is fenced; the new one gets the old assignment back.
        #expect(h.heartbeat("s2-a", generation: generation, instance: "i2") == .fencedInstanceId)
        #expect(h.heartbeat("s2-b", generation: generation, instance: "i2") == KafkaErrorCode.none)
        let resync = h.sync("s2-b", generation: generation, instance: "i2")
        #expect(h.syncs[resync]?.assignment == ByteBuffer(string: "A2"))
    }

    /// A restarted static leader: v9+ is told it leads but must skip the assignment; older
    /// versions get the old leader id so it does not assign at all.
    @Test(arguments: [true, false]) func staticLeaderRejoin(_ skipSupported: Bool) {
        var h = GroupHarness()
        _ = h.join("", newId: "s1-a", instance: "i1")
        _ = h.join("", newId: "s2-a", instance: "i2")
        _ = h.join("s1-a", instance: "i1")
        let generation = h.group.generationId
        _ = h.sync("s1-a", generation: generation, assignments: ["s1-a": "A1", "s2-a": "A2"], instance: "i1")
        h.finishStores()
        #expect(h.group.state == .stable)
        let restart = h.join("", newId: "s1-b", instance: "i1", skip: skipSupported)
        h.finishStores()
        let outcome = try! #require(h.joins[restart])
        #expect(outcome.generationId == generation)
        #expect(h.group.leaderId == "s1-b")
        #expect(outcome.skipAssignment == skipSupported)
        #expect(outcome.leaderId == (skipSupported ? "s1-b" : "s1-a"))
        #expect(outcome.members.map(\.memberId) == (skipSupported ? ["s1-b", "s2-a"] : []))
        let resync = h.sync("s1-b", generation: generation, instance: "i1")
        #expect(h.syncs[resync]?.assignment == ByteBuffer(string: "A1"))
        #expect(h.group.generationId == generation)
    }

    @Test func staticMemberRejoinWithOtherProtocolsRebalances() {
        var h = GroupHarness()
        _ = h.join("", newId: "s1", instance: "i1", protocols: ["range", "roundrobin"])
        let sync = h.sync("s1", generation: 1, assignments: ["s1": "x"], instance: "i1")
        h.finishStores()
        #expect(h.syncs[sync]?.error == KafkaErrorCode.none)
        let restart = h.join("", newId: "s1-b", instance: "i1", protocols: ["roundrobin"])
        #expect(h.group.generationId == 2, "the chosen protocol changed: a new generation")
        #expect(h.joins[restart]?.protocolName == "roundrobin")
        #expect(h.joins[restart]?.memberId == "s1-b")
    }

    @Test func protocolIsChosenByVoteAmongProtocolsEveryoneSupports() {
        var h = GroupHarness()
        h.stableGroup(["m1", "m2", "m3"], protocols: ["cooperative-sticky", "range"])
        #expect(h.group.protocolName == "cooperative-sticky")

        // The first member prefers roundrobin, the two others range: the majority wins.
        var v = GroupHarness()
        _ = v.join("", newId: "a", protocols: ["roundrobin", "range"], v4: false)
        #expect(v.group.protocolName == "roundrobin")
        _ = v.join("", newId: "b", protocols: ["range", "roundrobin"], v4: false)
        _ = v.join("", newId: "c", protocols: ["range", "roundrobin"], v4: false)
        #expect(v.group.state == .preparingRebalance)
        let a = v.join("a", protocols: ["roundrobin", "range"])
        #expect(v.joins[a]?.generationId == 2)
        #expect(v.group.protocolName == "range")

        // A member sharing no protocol with the group is refused.
        let odd = v.join("", newId: "d", protocols: ["sticky"], v4: false)
        #expect(v.joins[odd]?.error == .inconsistentGroupProtocol)
    }

    @Test func sessionTimeoutBoundsAreEnforced() {
        var h = GroupHarness()
        let short = h.join("", newId: "x", session: 1_000)
        #expect(h.joins[short]?.error == .invalidSessionTimeout)
        let long = h.join("", newId: "y", session: 2_000_000)
        #expect(h.joins[long]?.error == .invalidSessionTimeout)
    }

    @Test func initialDelayCollectsEarlyJoinersIntoOneGeneration() {
        var h = GroupHarness(initialDelayMs: 3_000)
        let a = h.join("", newId: "a", v4: false)
        h.advance(1_000)
        let b = h.join("", newId: "b", v4: false)
        #expect(h.joins[a] == nil && h.joins[b] == nil)
        h.advance(2_100)
        // b arrived during the delay: the delay is extended once.
        #expect(h.joins[a] == nil)
        h.advance(3_100)
        #expect(h.joins[a]?.generationId == 1)
        #expect(h.joins[b]?.generationId == 1)
        #expect(h.joins[a]?.members.count == 2)
    }

    @Test func offsetCommitChecks() {
        var simple = GroupHarness()
        #expect(simple.group.validateCommit(memberId: "", groupInstanceId: nil, generationId: -1, now: 0) == nil, "simple commit to an empty group")

        var h = GroupHarness()
        h.stableGroup(["m1"])
        #expect(h.group.validateCommit(memberId: "", groupInstanceId: nil, generationId: -1, now: h.now) == .unknownMemberId)
        #expect(h.group.validateCommit(memberId: "m1", groupInstanceId: nil, generationId: 0, now: h.now) == .illegalGeneration)
        #expect(h.group.validateCommit(memberId: "m1", groupInstanceId: nil, generationId: 1, now: h.now) == nil)
        _ = h.join("", newId: "m2")
        _ = h.join("m2")
        #expect(h.group.state == .preparingRebalance)
        #expect(h.group.validateCommit(memberId: "m1", groupInstanceId: nil, generationId: 1, now: h.now) == nil, "still allowed while preparing")
        _ = h.join("m1")
        #expect(h.group.state == .completingRebalance)
        #expect(h.group.validateCommit(memberId: "m1", groupInstanceId: nil, generationId: 2, now: h.now) == .rebalanceInProgress)
    }

    @Test func lateOffsetWritesDoNotOverwriteNewerOnes() {
        var h = GroupHarness()
        let key = OffsetKey(topic: "t", partition: 0)
        h.group.applyOffset(key, CommittedOffset(offset: 20, leaderEpoch: -1, metadata: nil, commitTimestamp: 0), position: 8)
        h.group.applyOffset(key, CommittedOffset(offset: 10, leaderEpoch: -1, metadata: nil, commitTimestamp: 0), position: 7)
        #expect(h.group.offsets[key]?.offset == 20)
    }

    @Test func groupRebuiltFromItsRecordsEqualsTheOriginal() throws {
        var h = GroupHarness()
        h.stableGroup(["m1", "m2"])
        _ = h.join("", newId: "s", instance: "inst")
        _ = h.join("m1")
        _ = h.join("m2")
        let generation = h.group.generationId
        _ = h.sync("m1", generation: generation, assignments: ["m1": "x", "m2": "y", "s": "z"])
        h.finishStores()
        #expect(h.group.state == .stable)
        var records: [GroupRecord] = [.metadata(group: "g", value: h.group.metadataValue(now: h.now))]
        var position: Int64 = 1
        for partition in Int32(0)..<3 {
            let key = OffsetKey(topic: "t", partition: partition)
            let value = CommittedOffset(offset: Int64(partition) * 7, leaderEpoch: 3, metadata: "p\(partition)", commitTimestamp: h.now)
            h.group.applyOffset(key, value, position: position)
            records.append(.offset(group: "g", key: key, value: value))
            position += 1
        }
        var replay = GroupReplay()
        for (index, record) in records.enumerated() {
            let (key, value) = record.encoded()
            replay.apply(try #require(try GroupRecord.decode(key: key, value: value)), position: Int64(index))
        }
        let rebuilt = try #require(replay.groups(config: h.group.config, now: h.now)["g"])
        #expect(rebuilt.metadataValue(now: h.now) == h.group.metadataValue(now: h.now))
        #expect(rebuilt.offsets == h.group.offsets)
        #expect(rebuilt.state == .stable)
        #expect(rebuilt.generationId == generation)
        #expect(rebuilt.members.map(\.memberId) == h.group.members.map(\.memberId))
        #expect(rebuilt.members.map(\.assignment) == h.group.members.map(\.assignment))
        // Members carry on with the rebuilt coordinator: heartbeats and the static member's fencing work.
        var continued = rebuilt
        #expect(continued.heartbeat(memberId: "m2", groupInstanceId: nil, generationId: generation, now: h.now) == KafkaErrorCode.none)
        #expect(continued.heartbeat(memberId: "old", groupInstanceId: "inst", generationId: generation, now: h.now) == .fencedInstanceId)
    }
}
