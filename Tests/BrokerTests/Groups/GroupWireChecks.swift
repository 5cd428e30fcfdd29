import KafkaProtocol
import KafkaTransport
import Logging
import NIOCore
import TestKit
import Testing

/// The newest (flexible) versions of the group APIs, which only the Java client sends, driven by
/// hand over the wire against a running cluster.
struct GroupWireChecks {
    let client = KafkaClient(logger: Logger(label: "group-wire-test") { _ in SwiftLogNoOpLogHandler() })
    let brokers: [KafkaEndpoint]

    func call<Request: KafkaRequest, Response: KafkaStruct>(
        _ request: Request, version: Int16, to endpoint: KafkaEndpoint, as: Response.Type = Response.self
    ) async throws -> Response {
        var body = ByteBuffer()
        try request.encode(to: &body, version: version)
        var reply = try await client.send(
            to: endpoint, apiKey: Request.apiKey.rawValue, apiVersion: version, headerVersion: Request.apiKey.requestHeaderVersion(version),
            responseHeaderVersion: Request.apiKey.responseHeaderVersion(version), clientId: "wire-check", body: body, timeout: .seconds(60))
        return try Response(from: &reply, version: version)
    }

    /// FindCoordinator v4 (batched) until the group has a coordinator.
    func coordinator(of group: String) async throws -> KafkaEndpoint {
        var request = FindCoordinatorRequest()
        request.keyType = 0
        request.coordinatorKeys = [group, group + "-other"]
        var coordinator: KafkaEndpoint?
        // The coordinator's election inside the cluster shows only by asking.
        try await waitUntil("a coordinator for \(group)", timeout: .seconds(20), every: .milliseconds(100)) {
            let response: FindCoordinatorResponse = try await call(request, version: 4, to: brokers[0])
            #expect(response.coordinators.map(\.key) == [group, group + "-other"])
            guard let found = response.coordinators.first, found.errorCode == 0 else { return false }
            coordinator = KafkaEndpoint(host: found.host, port: Int(found.port))
            return true
        }
        return try #require(coordinator)
    }

    func run(topic: String) async throws {
        let group = "wire-group"
        let coordinator = try await coordinator(of: group)
        let other = try #require(brokers.first { $0 != coordinator })

        // Old single-key FindCoordinator agrees.
        var v0 = FindCoordinatorRequest()
        v0.key = group
        let old: FindCoordinatorResponse = try await call(v0, version: 0, to: other)
        #expect(old.errorCode == 0 && KafkaEndpoint(host: old.host, port: Int(old.port)) == coordinator)

        var join = JoinGroupRequest()
        join.groupId = group
        join.sessionTimeoutMs = 10_000
        join.rebalanceTimeoutMs = 10_000
        join.protocolType = "consumer"
        var range = JoinGroupRequest.JoinGroupRequestProtocol()
        range.name = "range"
        range.metadata = ByteBuffer(string: "subscription")
        join.protocols = [range]
        let elsewhere: JoinGroupResponse = try await call(join, version: 9, to: other)
        #expect(elsewhere.errorCode == KafkaErrorCode.notCoordinator.rawValue)

        let first: JoinGroupResponse = try await call(join, version: 9, to: coordinator)
        #expect(first.errorCode == KafkaErrorCode.memberIdRequired.rawValue)
        #expect(first.memberId.hasPrefix("wire-check-"))
        join.memberId = first.memberId
        let joined: JoinGroupResponse = try await call(join, version: 9, to: coordinator)
        #expect(joined.errorCode == 0)
        #expect(joined.leader == first.memberId)
        #expect(joined.protocolType == "consumer" && joined.protocolName == "range")
        #expect(joined.members.map(\.memberId) == [first.memberId])
        #expect(joined.members.first?.metadata == ByteBuffer(string: "subscription"))
        let generation = joined.generationId

        var sync = SyncGroupRequest()
        sync.groupId = group
        sync.generationId = generation
        sync.memberId = first.memberId
        sync.protocolType = "consumer"
        sync.protocolName = "roundrobin"
        let mismatched: SyncGroupResponse = try await call(sync, version: 5, to: coordinator)
        #expect(mismatched.errorCode == KafkaErrorCode.inconsistentGroupProtocol.rawValue)
        sync.protocolName = "range"
        var assignment = SyncGroupRequest.SyncGroupRequestAssignment()
        assignment.memberId = first.memberId
        assignment.assignment = ByteBuffer(string: "all of it")
        sync.assignments = [assignment]
        let synced: SyncGroupResponse = try await call(sync, version: 5, to: coordinator)
        #expect(synced.errorCode == 0 && synced.assignment == ByteBuffer(string: "all of it") && synced.protocolName == "range")

        var heartbeat = HeartbeatRequest()
        heartbeat.groupId = group
        heartbeat.memberId = first.memberId
        heartbeat.generationId = generation
        let beat: HeartbeatResponse = try await call(heartbeat, version: 4, to: coordinator)
        #expect(beat.errorCode == 0)
        heartbeat.generationId = generation + 1
        let stale: HeartbeatResponse = try await call(heartbeat, version: 4, to: coordinator)
        #expect(stale.errorCode == KafkaErrorCode.illegalGeneration.rawValue)

        var commit = OffsetCommitRequest()
        commit.groupId = group
        commit.generationIdOrMemberEpoch = generation
        commit.memberId = first.memberId
        var partitions: [OffsetCommitRequest.OffsetCommitRequestPartition] = []
        for (index, offset) in [(Int32(0), Int64(42)), (99, 1)] {
            var partition = OffsetCommitRequest.OffsetCommitRequestPartition()
            partition.partitionIndex = index
            partition.committedOffset = offset
            partition.committedLeaderEpoch = 3
            partition.committedMetadata = "m"
            partitions.append(partition)
        }
        var committedTopic = OffsetCommitRequest.OffsetCommitRequestTopic()
        committedTopic.name = topic
        committedTopic.partitions = partitions
        commit.topics = [committedTopic]
        let committed: OffsetCommitResponse = try await call(commit, version: 9, to: coordinator)
        #expect(committed.topics.first?.partitions.map(\.errorCode) == [0, KafkaErrorCode.unknownTopicOrPartition.rawValue])

        var fetch = OffsetFetchRequest()
        var fetchGroup = OffsetFetchRequest.OffsetFetchRequestGroup()
        fetchGroup.groupId = group
        fetchGroup.topics = nil
        var unknownGroup = OffsetFetchRequest.OffsetFetchRequestGroup()
        unknownGroup.groupId = "wire-nobody"
        fetch.groups = [fetchGroup, unknownGroup]
        let fetched: OffsetFetchResponse = try await call(fetch, version: 9, to: coordinator)
        let partition = fetched.groups.first?.topics.first?.partitions.first
        #expect(fetched.groups.first?.errorCode == 0)
        #expect(partition?.committedOffset == 42 && partition?.committedLeaderEpoch == 3 && partition?.metadata == "m")
        // The second group lives on whichever coordinator it hashes to: here it is answered or refused, never dropped.
        #expect(fetched.groups.count == 2)

        var oldFetch = OffsetFetchRequest()
        oldFetch.groupId = group
        var oldTopic = OffsetFetchRequest.OffsetFetchRequestTopic()
        oldTopic.name = topic
        oldTopic.partitionIndexes = [0, 1]
        oldFetch.topics = [oldTopic]
        let oldFetched: OffsetFetchResponse = try await call(oldFetch, version: 1, to: coordinator)
        #expect(oldFetched.topics.first?.partitions.map(\.committedOffset) == [42, -1])

        var leave = LeaveGroupRequest()
        leave.groupId = group
        var member = LeaveGroupRequest.MemberIdentity()
        member.memberId = first.memberId
        var ghost = LeaveGroupRequest.MemberIdentity()
        ghost.memberId = "ghost"
        leave.members = [member, ghost]
        let left: LeaveGroupResponse = try await call(leave, version: 5, to: coordinator)
        #expect(left.errorCode == 0)
        #expect(left.members.map(\.errorCode) == [0, KafkaErrorCode.unknownMemberId.rawValue])

        var describe = DescribeGroupsRequest()
        describe.groups = [group]
        let described: DescribeGroupsResponse = try await call(describe, version: 5, to: coordinator)
        #expect(described.groups.first?.groupState == "Empty")

        // A simple (generation -1) commit to the now empty group, then the group is deleted with its offsets.
        var simple = commit
        simple.generationIdOrMemberEpoch = -1
        simple.memberId = ""
        simple.topics[0].partitions = [partitions[0]]
        let simpleCommitted: OffsetCommitResponse = try await call(simple, version: 2, to: coordinator)
        #expect(simpleCommitted.topics.first?.partitions.map(\.errorCode) == [0])
        var delete = DeleteGroupsRequest()
        delete.groupsNames = [group, "wire-never-existed"]
        let deleted: DeleteGroupsResponse = try await call(delete, version: 2, to: coordinator)
        #expect(deleted.results.first?.errorCode == 0)
        let afterDelete: OffsetFetchResponse = try await call(oldFetch, version: 1, to: coordinator)
        #expect(afterDelete.topics.first?.partitions.map(\.committedOffset) == [-1, -1])
        await client.closeAll()
    }
}
