@testable import BrokerCore
import KafkaProtocol
import NIOCore
import Testing

@Suite struct OffsetRetentionTests {
    static let day: Int64 = 24 * 3_600_000

    static func subscription(_ topics: [String]) throws -> ByteBuffer {
        var subscription = ConsumerProtocolSubscription()
        subscription.topics = topics
        var buffer = ByteBuffer()
        buffer.writeKafkaInteger(Int16(0))
        try subscription.encode(to: &buffer, version: 0)
        return buffer
    }

    @Test func simpleCommitsExpireByCommitTime() {
        var group = ClassicGroup(groupId: "simple", now: 0)
        group.applyOffset(OffsetKey(topic: "t", partition: 0), CommittedOffset(offset: 1, leaderEpoch: -1, metadata: nil, commitTimestamp: 0), position: 0)
        group.applyOffset(OffsetKey(topic: "t", partition: 1), CommittedOffset(offset: 1, leaderEpoch: -1, metadata: nil, commitTimestamp: 3 * Self.day), position: 1)
        #expect(group.expiredOffsets(now: 7 * Self.day - 1).isEmpty)
        #expect(group.expiredOffsets(now: 7 * Self.day) == [OffsetKey(topic: "t", partition: 0)])
        #expect(group.expiredOffsets(now: 10 * Self.day).count == 2)
    }

    @Test func emptyConsumerGroupExpiresAWeekAfterItEmptied() throws {
        var h = GroupHarness()
        h.stableGroup(["m1"])
        let key = OffsetKey(topic: "t", partition: 0)
        h.group.applyOffset(key, CommittedOffset(offset: 5, leaderEpoch: -1, metadata: nil, commitTimestamp: h.now), position: 0)
        #expect(h.group.expiredOffsets(now: h.now + 30 * Self.day).isEmpty, "the group has a member")
        h.now += 2 * Self.day
        let emptied = h.now
        h.absorb(h.group.leave([("m1", nil)], now: h.now).actions)
        #expect(h.group.state == .empty)
        #expect(h.group.expiredOffsets(now: emptied + 7 * Self.day - 1).isEmpty)
        #expect(h.group.expiredOffsets(now: emptied + 7 * Self.day) == [key])
    }

    @Test func stableConsumerGroupExpiresOnlyUnsubscribedTopics() throws {
        var group = ClassicGroup(
            groupId: "g",
            loaded: GroupMetadataValue(
                protocolType: "consumer", generationId: 3, protocolName: "range", leaderId: "m", stateTimestamp: 0,
                members: [
                    .init(memberId: "m", groupInstanceId: nil, clientId: "c", clientHost: "h", rebalanceTimeoutMs: 1, sessionTimeoutMs: 10_000,
                          subscription: try Self.subscription(["kept"]), assignment: ByteBuffer())
                ]),
            offsets: [:], now: 0)
        #expect(group.state == .stable)
        #expect(group.subscribedTopics == ["kept"])
        group.applyOffset(OffsetKey(topic: "kept", partition: 0), CommittedOffset(offset: 1, leaderEpoch: -1, metadata: nil, commitTimestamp: 0), position: 0)
        group.applyOffset(OffsetKey(topic: "gone", partition: 0), CommittedOffset(offset: 1, leaderEpoch: -1, metadata: nil, commitTimestamp: 0), position: 1)
        #expect(group.expiredOffsets(now: 8 * Self.day) == [OffsetKey(topic: "gone", partition: 0)])
    }
}
