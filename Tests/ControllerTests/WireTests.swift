import ClusterMetadata
import ControllerClient
@testable import ControllerCore
import KafkaProtocol
import KafkaTransport
import NIOCore
import Raft
import TestKit
import Testing

@Suite struct WireTests {
    @Test func raftMessagesRoundTripThroughTheWireSchema() throws {
        let metadata = RaftSnapshotMetadata(index: 40, term: 3)
        let messages: [RaftMessage] = [
            .vote(RaftVoteRequest(term: 5, lastLogIndex: 9, lastLogTerm: 4, isPreVote: true, isLeadershipTransfer: true)),
            .voteResponse(RaftVoteResponse(term: 5, granted: true, isPreVote: false)),
            .append(RaftAppendRequest(term: 6, prevLogIndex: 10, prevLogTerm: 5, entries: [
                RaftLogEntry(term: 6, index: 11, kind: .noop, payload: []),
                RaftLogEntry(term: 6, index: 12, kind: .command, payload: [1, 2, 3]),
            ], leaderCommit: 10)),
            .appendResponse(RaftAppendResponse(term: 6, success: false, matchIndex: 0, rejectedIndex: 10, conflictTerm: 4, conflictIndex: 7)),
            .appendResponse(RaftAppendResponse(term: 6, success: true, matchIndex: 12)),
            .snapshot(RaftSnapshotRequest(term: 7, metadata: metadata, offset: 1024, data: [9, 9], done: true)),
            .snapshotResponse(RaftSnapshotResponse(term: 7, metadata: metadata, nextOffset: 1026, installed: true, matchIndex: 40)),
            .timeoutNow(term: 8),
        ]
        for message in messages {
            let envelope = RaftEnvelope(from: 1, to: 3, message: message)
            var buffer = ByteBuffer()
            try RaftWire.encode(envelope).encode(to: &buffer, version: 0)
            let decoded = try RaftWire.decode(try RaftMessageRequest(from: &buffer, version: 0))
            #expect(decoded == envelope)
        }
    }

    @Test func unknownRaftKindsAreErrors() {
        var wire = RaftMessageRequest()
        wire.kind = 42
        #expect(throws: ProtocolError.self) { try RaftWire.decode(wire) }
        wire.kind = 2
        var entry = RaftMessageRequest.RaftEntry()
        entry.entryKind = 9
        wire.entries = [entry]
        #expect(throws: ProtocolError.self) { try RaftWire.decode(wire) }
    }

    @Test func metadataResultsRoundTripAndRejectGarbage() throws {
        let results: [MetadataResult] = [
            .ok, .error(MetadataError(40, "bad config")), .nodeRegistered(incarnation: 77),
            .items([ItemResult(name: "a", partition: 2, errorCode: 0, message: nil), ItemResult(name: "b", errorCode: 36, message: "exists")]),
            .objectPrepared(12), .objectsExpired([1, 2, 3]), .producerIds(firstId: 5000, count: 1000),
        ]
        for result in results {
            #expect(try MetadataResult(decoding: result.encode()) == result)
        }
        #expect(throws: ProtocolError.self) { try MetadataResult(decoding: ByteBuffer(bytes: [99])) }
        #expect(throws: ProtocolError.self) { try MetadataResult(decoding: ByteBuffer(bytes: [3, 0xFF, 0xFF, 0xFF, 0x0F])) }
        #expect(throws: ProtocolError.self) { try MetadataResult(decoding: ByteBuffer(bytes: [0, 0])) }
        #expect(throws: ProtocolError.self) { try MetadataResult(decoding: ByteBuffer()) }
    }

    @Test func endpointAndVoterParsing() throws {
        #expect(try parseEndpoints("127.0.0.1:9000, [::1]:9001") == [
            KafkaEndpoint(host: "127.0.0.1", port: 9000), KafkaEndpoint(host: "::1", port: 9001),
        ])
        #expect(throws: ControllerClientError.self) { try parseEndpoints("") }
        #expect(throws: ControllerClientError.self) { try parseEndpoint("host") }
        #expect(throws: ControllerClientError.self) { try parseEndpoint("host:70000") }
        let voters = try ControllerVoter.parseList("1@a:1,2@b:2")
        #expect(voters.map(\.id) == [1, 2])
        #expect(throws: (any Error).self) { try ControllerVoter.parseList("1@a:1,1@b:2") }
        #expect(throws: (any Error).self) { try ControllerVoter.parseList("x@a:1") }
    }
}

@Suite(.serialized) struct RPCTests {
    @Test func badRequestsGetErrorCodesAndMetadataFallsBackToSnapshots() async throws {
        let cluster = try InProcessCluster(count: 1)
        cluster.configure = {
            $0.snapshotThreshold = 10
            $0.entriesKeptAfterSnapshot = 2
        }
        defer { cluster.cleanup() }
        try await cluster.startAll()
        _ = try #require(await cluster.leader())
        let transport = KafkaClient(logger: testLogger)
        let endpoint = cluster.endpoints[0]

        // A command that does not decode is INVALID_REQUEST, not a crash.
        var write = ControllerWriteRequest()
        write.command = ByteBuffer(bytes: [0xFF, 0x00, 0x13])
        var body = ByteBuffer()
        try write.encode(to: &body, version: 0)
        var raw = try await transport.send(
            to: endpoint, apiKey: ApiKey.controllerWrite.rawValue, apiVersion: 0, headerVersion: 2, responseHeaderVersion: 1,
            clientId: "test", body: body, timeout: .seconds(5))
        let response = try ControllerWriteResponse(from: &raw, version: 0)
        #expect(response.errorCode == KafkaErrorCode.invalidRequest.rawValue)

        // An unknown node kind is refused.
        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        var register = ControllerRegisterRequest()
        register.nodeId = 3
        register.kind = 99
        body.clear()
        try register.encode(to: &body, version: 0)
        raw = try await transport.send(
            to: endpoint, apiKey: ApiKey.controllerRegister.rawValue, apiVersion: 0, headerVersion: 2, responseHeaderVersion: 1,
            clientId: "test", body: body, timeout: .seconds(5))
        #expect(try ControllerRegisterResponse(from: &raw, version: 0).errorCode == KafkaErrorCode.invalidRequest.rawValue)

        // ApiVersions lists the controller's apis.
        var versions = ApiVersionsRequest()
        versions.clientSoftwareName = "test"
        versions.clientSoftwareVersion = "1"
        body.clear()
        try versions.encode(to: &body, version: 3)
        raw = try await transport.send(
            to: endpoint, apiKey: ApiKey.apiVersions.rawValue, apiVersion: 3, headerVersion: 2, responseHeaderVersion: 0,
            clientId: "test", body: body, timeout: .seconds(5))
        let advertised = try ApiVersionsResponse(from: &raw, version: 3)
        #expect(advertised.apiKeys.map(\.apiKey).contains(ApiKey.fetchMetadata.rawValue))
        #expect(advertised.apiKeys.map(\.apiKey).contains(ApiKey.controllerWrite.rawValue))

        // An unserved api closes the connection instead of crashing; a later request reconnects.
        body.clear()
        await #expect(throws: (any Error).self) {
            _ = try await transport.send(
                to: endpoint, apiKey: ApiKey.produce.rawValue, apiVersion: 9, headerVersion: 2, responseHeaderVersion: 1,
                clientId: "test", body: body, timeout: .seconds(5))
        }

        // A fetch from version 0 after the log start gets the whole state as a snapshot.
        for k in 0..<30 { _ = try await client.write(.createTopics([topic("s\(k)")])) }
        let status = try await client.describe(endpoint)
        let fromStart = try await client.fetchMetadata(from: endpoint, fromVersion: 0, maxWait: .zero)
        let node = try #require(cluster.services[0]?.node)
        let logStart = await node.logStartForTesting
        #expect(logStart > 0)
        #expect(fromStart.snapshot != nil)
        var image = MetadataState()
        if let snapshot = fromStart.snapshot { image = try MetadataState(snapshot: snapshot) }
        for entry in fromStart.entries {
            _ = image.apply(try MetadataLogEntry(decoding: entry.command), index: UInt64(entry.index), term: UInt64(entry.term))
        }
        #expect(fromStart.version == status.appliedIndex)
        #expect(image.topicNames.count == 30)

        // A fetch at the head waits, then returns nothing new.
        let clock = ContinuousClock()
        let start = clock.now
        let idle = try await client.fetchMetadata(from: endpoint, fromVersion: UInt64(status.appliedIndex), maxWait: .milliseconds(200))
        #expect(start.duration(to: clock.now) >= .milliseconds(150))
        #expect(idle.entries.isEmpty && idle.snapshot == nil)
        #expect(idle.version == status.appliedIndex)
        await transport.closeAll()
        await cluster.stopAll()
    }
}
