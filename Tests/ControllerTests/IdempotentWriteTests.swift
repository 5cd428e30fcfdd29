import ClusterMetadata
import ControllerClient
@testable import ControllerCore
import Foundation
import KafkaProtocol
import KafkaTransport
import NIOCore
import TestKit
import Testing

/// A ControllerWrite sent as a client's retry would be: the same command with the same write id.
private func sendWrite(
    _ command: MetadataCommand, writeId: WriteID, to endpoint: KafkaEndpoint, via transport: KafkaClient
) async throws -> ControllerWriteResponse {
    var request = ControllerWriteRequest()
    request.command = command.encode()
    request.writeId = writeId
    var body = ByteBuffer()
    try request.encode(to: &body, version: 0)
    var raw = try await transport.send(
        to: endpoint, apiKey: ApiKey.controllerWrite.rawValue, apiVersion: 0, headerVersion: 2, responseHeaderVersion: 1,
        clientId: "test", body: body, timeout: .seconds(5))
    return try ControllerWriteResponse(from: &raw, version: 0)
}

private func items(_ result: MetadataResult) -> [Int16] {
    guard case let .items(items) = result else { return [-99] }
    return items.map(\.errorCode)
}

private func itemCodes(_ response: ControllerWriteResponse) throws -> [Int16] {
    guard case let .items(items) = try MetadataResult(decoding: response.result) else { return [-99] }
    return items.map(\.errorCode)
}

/// A started one-controller cluster, its node and a transport to it.
private func startSingleController() async throws -> (InProcessCluster, ControllerNode, KafkaClient) {
    let cluster = try InProcessCluster(count: 1)
    do {
        try await cluster.startAll()
        _ = try #require(await cluster.leader())
        return (cluster, try #require(cluster.services[0]?.node), KafkaClient(logger: testLogger))
    } catch {
        cluster.cleanup()
        throw error
    }
}

@Suite(.serialized) struct IdempotentWriteTests {
    @Test func aRepeatedWriteIdGetsTheFirstAnswerAndAppliesOnce() async throws {
        let (cluster, node, transport) = try await startSingleController()
        defer { cluster.cleanup() }
        let endpoint = cluster.endpoints[0]
        let create = MetadataCommand.createTopics([topic("once", partitions: 2)])
        let id = WriteID.random()

        let first = try await sendWrite(create, writeId: id, to: endpoint, via: transport)
        #expect(first.errorCode == 0)
        #expect(try itemCodes(first) == [0])
        let retry = try await sendWrite(create, writeId: id, to: endpoint, via: transport)
        #expect(retry == first)
        #expect(await node.metadata.topics.count == 1)

        // Another write of the same topic is a real conflict.
        let other = try await sendWrite(create, writeId: .random(), to: endpoint, via: transport)
        #expect(try itemCodes(other) == [MetadataErrorCode.topicAlreadyExists])
        #expect(other.index > first.index)

        // ControllerClient sends an id with every write.
        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let before = await node.metadata.rememberedWrites.count
        _ = try await client.write(.createTopics([topic("client")]))
        #expect(await node.metadata.rememberedWrites.count == before + 1)

        await client.close()
        await transport.closeAll()
        await cluster.stopAll()
    }

    /// The leader answers an id it has already applied without a new entry, so this drives the other path: two
    /// attempts proposed before either is applied both reach the log, and the second entry must change nothing.
    @Test func twoAttemptsInTheLogAtOnceApplyOnce() async throws {
        let cluster = try InProcessCluster(count: 1)
        defer { cluster.cleanup() }
        try await cluster.startAll()
        _ = try #require(await cluster.leader())
        let node = try #require(cluster.services[0]?.node)
        var bothLogged = 0
        for round in 0..<3 {
            let command = MetadataCommand.createTopics([topic("raced\(round)")])
            let id = WriteID.random()
            let logBefore = await node.currentStatus.lastLogIndex
            // Both proposals reach the actor while the first waits for its entry to become durable.
            async let a = node.propose(command, writeId: id, timeout: .seconds(5))
            async let b = node.propose(command, writeId: id, timeout: .seconds(5))
            let (first, second) = await (a, b)
            guard case let .applied(resultA, indexA) = first, case let .applied(resultB, indexB) = second else {
                Issue.record("not applied: \(first), \(second)")
                continue
            }
            #expect(resultA == resultB && indexA == indexB)
            #expect(items(resultA) == [0])
            if await node.currentStatus.lastLogIndex == logBefore + 2 { bothLogged += 1 }
        }
        #expect(bothLogged > 0, "no round put both attempts into the log")
        #expect(await node.metadata.topicNames == ["raced0", "raced1", "raced2"])
        await cluster.stopAll()
    }

    @Test func aRetryAtANewLeaderAndAfterARestartGetsTheFirstAnswer() async throws {
        let cluster = try InProcessCluster()
        // Small snapshots, so the remembered write also travels through snapshots and the saved applied state.
        cluster.configure = {
            $0.snapshotThreshold = 8
            $0.entriesKeptAfterSnapshot = 2
        }
        defer { cluster.cleanup() }
        try await cluster.startAll()
        let leader = try #require(await cluster.leader())
        let transport = KafkaClient(logger: testLogger)
        let create = MetadataCommand.createTopics([topic("survivor", partitions: 3)])
        let id = WriteID.random()

        // The leader commits the write; its answer is then "lost" with the leader.
        let first = try await sendWrite(create, writeId: id, to: cluster.endpoints[leader], via: transport)
        #expect(first.errorCode == 0)
        #expect(try itemCodes(first) == [0])
        await cluster.stop(leader)

        let newLeader = try #require(await cluster.leader(excluding: leader))
        #expect(newLeader != leader)
        let atNewLeader = try await sendWrite(create, writeId: id, to: cluster.endpoints[newLeader], via: transport)
        #expect(atNewLeader == first)

        // Push the write out of the log into snapshots, then restart every controller.
        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        for k in 0..<12 { _ = try await client.write(.createTopics([topic("filler\(k)")])) }
        await client.close()
        try await cluster.start(leader)
        await cluster.stopAll()
        try await cluster.startAll()
        let restartedLeader = try #require(await cluster.leader())
        let afterRestart = try await sendWrite(create, writeId: id, to: cluster.endpoints[restartedLeader], via: transport)
        #expect(afterRestart == first)
        let node = try #require(cluster.services[restartedLeader]?.node)
        #expect(await node.metadata.topics["survivor"]?.partitions.count == 3)
        #expect(await node.metadata.rememberedWrites[id]?.index == UInt64(first.index))

        await transport.closeAll()
        await cluster.stopAll()
    }

    /// The case the ids exist for: the leader process commits a CreateTopics and is SIGKILLed before anyone
    /// reads the answer; the retry goes to whichever controller leads next.
    @Test(.timeLimit(.minutes(1))) func aRetryAfterTheCommittingLeaderIsKilledGetsTheFirstAnswer() async throws {
        let binary = try #require(builtProduct("floe-controller"), "floe-controller not built next to the tests")
        let cluster = try ControllerProcesses(binary: binary)
        defer { cluster.cleanup() }
        for k in 0..<3 { try cluster.start(k) }
        let transport = KafkaClient(logger: testLogger)
        let create = MetadataCommand.createTopics([topic("killed-leader", partitions: 2)])
        let id = WriteID.random()

        func writeAtLeader(excluding: Int?) async throws -> (ControllerWriteResponse, Int) {
            // Which process leads, and when it is elected, only shows by asking: poll every endpoint.
            var answer: (ControllerWriteResponse, Int)?
            try await waitUntil("a controller leader answering", timeout: .seconds(20), every: .milliseconds(20)) {
                for (k, endpoint) in cluster.endpoints.enumerated() where k != excluding {
                    guard let response = try? await sendWrite(create, writeId: id, to: endpoint, via: transport),
                          response.errorCode == 0
                    else { continue }
                    answer = (response, k)
                    return true
                }
                return false
            }
            return try #require(answer)
        }

        let (first, leader) = try await writeAtLeader(excluding: nil)
        #expect(try itemCodes(first) == [0])
        cluster.kill(leader)
        let (retry, newLeader) = try await writeAtLeader(excluding: leader)
        #expect(newLeader != leader)
        #expect(retry.result == first.result && retry.index == first.index)

        // A different write of the topic conflicts, so the retry above really did not create it a second time.
        let conflict = try await sendWrite(create, writeId: .random(), to: cluster.endpoints[newLeader], via: transport)
        #expect(try itemCodes(conflict) == [MetadataErrorCode.topicAlreadyExists])
        await transport.closeAll()
    }

    /// Registrations carry a write id too: a retried registration answers the incarnation of its first application
    /// instead of taking a second one, and a new registration takes a new incarnation.
    @Test func aRetriedRegistrationGetsTheSameIncarnation() async throws {
        let (cluster, node, transport) = try await startSingleController()
        defer { cluster.cleanup() }
        var request = ControllerRegisterRequest()
        request.nodeId = 7
        request.kind = Int8(NodeKind.walWriter.rawValue)
        request.zone = "a"
        request.listener = "127.0.0.1:1"
        request.admin = "127.0.0.1:2"
        request.writeId = .random()

        let first = try await transport.send(request, version: 0, to: cluster.endpoints[0], clientId: "test", timeout: .seconds(5))
        #expect(first.errorCode == 0)
        let retry = try await transport.send(request, version: 0, to: cluster.endpoints[0], clientId: "test", timeout: .seconds(5))
        #expect(retry.errorCode == 0)
        #expect(retry.incarnation == first.incarnation)
        #expect(await node.metadata.nodes[7]?.incarnation == first.incarnation)

        request.writeId = .random()
        let again = try await transport.send(request, version: 0, to: cluster.endpoints[0], clientId: "test", timeout: .seconds(5))
        #expect(again.incarnation > first.incarnation)
        #expect(await node.metadata.nodes[7]?.incarnation == again.incarnation)
        await transport.closeAll()
        await cluster.stopAll()
    }
}
