@testable import BrokerCore
import ClusterMetadata
import KafkaProtocol
import NIOCore
import Testing

/// Group API responses at every version the broker advertises: each encodes (a field a version
/// cannot carry would close the client's connection) and decodes back to what the coordinator said.
@Suite struct GroupHandlerTests {
    static func roundTrip<Message: KafkaStruct>(_ message: Message, version: Int16) throws -> Message {
        var buffer = ByteBuffer()
        try message.encode(to: &buffer, version: version)
        let decoded = try Message(from: &buffer, version: version)
        #expect(buffer.readableBytes == 0)
        return decoded
    }

    @Test(arguments: Int16(0)...9) func joinResponseAtEveryVersion(_ version: Int16) throws {
        var outcome = JoinOutcome(error: .none, memberId: "m2")
        outcome.generationId = 4
        outcome.protocolType = "consumer"
        outcome.protocolName = "range"
        outcome.leaderId = "m2"
        outcome.skipAssignment = true
        outcome.members = [
            .init(memberId: "m1", groupInstanceId: "i1", metadata: ByteBuffer(string: "a")),
            .init(memberId: "m2", groupInstanceId: nil, metadata: ByteBuffer(string: "b")),
        ]
        let decoded = try Self.roundTrip(GroupHandlers.joinResponse(outcome, version: version), version: version)
        #expect(decoded.generationId == 4)
        #expect(decoded.memberId == "m2")
        #expect(decoded.leader == "m2")
        #expect(decoded.protocolName == "range")
        #expect(decoded.protocolType == (version >= 7 ? "consumer" : nil))
        #expect(decoded.skipAssignment == (version >= 9))
        #expect(decoded.members.map(\.memberId) == ["m1", "m2"])
        #expect(decoded.members.first?.groupInstanceId == (version >= 5 ? "i1" : nil))

        // Errors carry no protocol name; before v7 that is an empty string, later null.
        let failed = try Self.roundTrip(GroupHandlers.joinResponse(JoinOutcome(error: .memberIdRequired, memberId: "new"), version: version), version: version)
        #expect(failed.errorCode == KafkaErrorCode.memberIdRequired.rawValue)
        #expect(failed.memberId == "new")
        #expect(failed.generationId == -1)
        #expect(failed.protocolName == (version >= 7 ? nil : ""))
    }

    @Test(arguments: Int16(0)...5) func syncResponseAtEveryVersion(_ version: Int16) throws {
        var outcome = SyncOutcome(error: .none)
        outcome.protocolType = "consumer"
        outcome.protocolName = "cooperative-sticky"
        outcome.assignment = ByteBuffer(string: "assignment")
        let decoded = try Self.roundTrip(GroupHandlers.syncResponse(outcome, version: version), version: version)
        #expect(decoded.assignment == ByteBuffer(string: "assignment"))
        #expect(decoded.protocolName == (version >= 5 ? "cooperative-sticky" : nil))
    }

    @Test(arguments: Int16(0)...5) func describeAndListAtEveryVersion(_ version: Int16) throws {
        let summary = GroupCoordinator.Summary(
            groupId: "g", state: .stable, protocolType: "consumer", protocolName: "range",
            members: [
                .init(memberId: "m1", groupInstanceId: "i1", clientId: "c", clientHost: "/127.0.0.1", metadata: ByteBuffer(string: "md"),
                      assignment: ByteBuffer(string: "as"))
            ])
        var describe = DescribeGroupsResponse()
        describe.groups = [GroupHandlers.describedGroup("g", error: .none, summary: summary, version: version)]
        let described = try Self.roundTrip(describe, version: version)
        #expect(described.groups.first?.groupState == "Stable")
        #expect(described.groups.first?.protocolData == "range")
        #expect(described.groups.first?.members.first?.memberAssignment == ByteBuffer(string: "as"))
        #expect(described.groups.first?.members.first?.groupInstanceId == (version >= 4 ? "i1" : nil))

        let empty = GroupCoordinator.Summary(groupId: "e", state: .empty, protocolType: "", protocolName: "", members: [])
        var request = ListGroupsRequest()
        request.statesFilter = version >= 4 ? ["stable"] : []
        let listed = try Self.roundTrip(GroupHandlers.listResponse(request, error: .none, groups: [empty, summary], version: version), version: version)
        #expect(listed.groups.map(\.groupId) == (version >= 4 ? ["g"] : ["e", "g"]))
        #expect(listed.groups.last?.groupState == (version >= 4 ? "Stable" : ""))
        if version >= 5 {
            request.typesFilter = ["consumer"]
            #expect(GroupHandlers.listResponse(request, error: .none, groups: [summary], version: version).groups.isEmpty)
            request.typesFilter = ["Classic"]
            #expect(GroupHandlers.listResponse(request, error: .none, groups: [summary], version: version).groups.map(\.groupType) == ["classic"])
        }
    }

    @Test func withZoneRoutingClientsAreSentToTheirZonesBroker() async throws {
        let fixture = await AdminFixture()
        _ = await fixture.seed(CoordinatorPlacement.offsetsTopic, partitions: 4, internal: true)
        let state = await fixture.state
        let leaders = try #require(state.topics[CoordinatorPlacement.offsetsTopic]).partitions.map(\.leader)
        #expect(Set(leaders) == [1, 2], "the offsets topic spreads over brokers 1 (zone a) and 2 (zone b)")
        for group in ["g1", "g2", "g3", "g4", "g5", "g6"] {
            let real = GroupHandlers.locate(group, keyType: 0, state: state).nodeId
            #expect(GroupHandlers.locate(group, keyType: 0, state: state, zone: "a").nodeId == 1, "\(group) led by \(real)")
            #expect(GroupHandlers.locate(group, keyType: 0, state: state, zone: "b").nodeId == 2, "\(group) led by \(real)")
            #expect(GroupHandlers.locate(group, keyType: 0, state: state, zone: "nowhere").nodeId == real)
        }
    }

    @Test func findCoordinatorLocatesThePartitionLeader() async throws {
        let fixture = await AdminFixture()
        var state = await fixture.state
        #expect(GroupHandlers.locate("group", keyType: 0, state: state).error == .coordinatorNotAvailable, "no offsets topic yet")
        _ = await fixture.seed(CoordinatorPlacement.offsetsTopic, partitions: 3, internal: true)
        state = await fixture.state
        // "group" hashes to 98629247; 98629247 % 3 == 2.
        let leader = try #require(state.topics[CoordinatorPlacement.offsetsTopic]?.partitions[2].leader)
        let node = try #require(state.nodes[leader])
        let located = GroupHandlers.locate("group", keyType: 0, state: state)
        #expect(located.error == KafkaErrorCode.none)
        #expect(located.nodeId == leader)
        #expect("\(located.host):\(located.port)" == node.registration.listener.replacingOccurrences(of: "[", with: "").replacingOccurrences(of: "]", with: ""))
        #expect(GroupHandlers.locate("group", keyType: 1, state: state).error == .coordinatorNotAvailable, "no transaction coordinator")
        #expect(GroupHandlers.locate("group", keyType: 7, state: state).error == .invalidRequest)
        #expect(GroupHandlers.locate("", keyType: 0, state: state).error == .invalidRequest)
        #expect(GroupHandlers.locate("group", keyType: 0, state: state).nodeId != -1)
    }
}
