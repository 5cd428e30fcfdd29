import ClusterMetadata
import ControllerClient
@testable import ControllerCore
import KafkaTransport
import TestKit
import Testing

/// Three in-process controllers on fixed loopback ports with their own data directories.
final class InProcessCluster: @unchecked Sendable {
    let ports: [Int]
    let directories: [String]
    let voters: [ControllerVoter]
    let sessionTimeout: Duration
    var services: [ControllerService?]
    var configure: @Sendable (inout ControllerConfiguration) -> Void = { _ in }

    init(count: Int = 3, sessionTimeout: Duration = .seconds(6)) throws {
        let ports = try freePorts(count)
        self.ports = ports
        directories = try (0..<count).map { try temporaryDirectory("cluster\($0)") }
        voters = (0..<count).map { ControllerVoter(id: Int32($0 + 1), endpoint: KafkaEndpoint(host: "127.0.0.1", port: ports[$0])) }
        self.sessionTimeout = sessionTimeout
        services = Array(repeating: nil, count: count)
    }

    var endpoints: [KafkaEndpoint] { voters.map(\.endpoint) }

    func start(_ k: Int) async throws {
        var configuration = testConfiguration(id: Int32(k + 1), voters: voters, port: ports[k], directory: directories[k], sessionTimeout: sessionTimeout)
        configure(&configuration)
        services[k] = try await ControllerService.start(configuration: configuration, logger: testLogger)
    }

    func startAll() async throws {
        for k in services.indices { try await start(k) }
    }

    func stop(_ k: Int, transfer: Bool = false) async {
        await services[k]?.stop(transferLeadership: transfer)
        services[k] = nil
    }

    func stopAll() async {
        for k in services.indices { await stop(k) }
    }

    func cleanup() {
        for directory in directories { removeDirectory(directory) }
    }

    /// The index of the running leader, waiting up to `timeout` for one that all running nodes agree on.
    func leader(timeout: Duration = .seconds(10), excluding: Int? = nil) async -> Int? {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var rounds = 0
        while clock.now < deadline, rounds < 10_000 {
            rounds += 1
            for (k, service) in services.enumerated() where k != excluding {
                guard let service else { continue }
                let status = await service.node.currentStatus
                if status.role == "leader" { return k }
            }
            // Wait for a status change on any running node rather than spinning.
            if let any = services.compactMap({ $0 }).first {
                _ = await any.node.waitForStatus(timeout: .milliseconds(50)) { $0.role == "leader" }
            }
        }
        return nil
    }
}

@Suite(.serialized) struct ClusterTests {
    /// A new leader's no-op moves the follower's `version` past the image's last applied command;
    /// waiting for the next change must then still wait for a command.
    @Test func waitingForTheNextChangeIgnoresEntriesThatChangeNothing() async throws {
        let cluster = try InProcessCluster(count: 1)
        defer { cluster.cleanup() }
        try await cluster.startAll()
        _ = try #require(await cluster.leader())
        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let (_, index) = try await client.writeWithIndex(.createTopics([topic("first")]))
        let image = MetadataFollower(client: client, logger: testLogger)
        let following = Task { await image.run() }
        defer { following.cancel() }
        #expect(await image.waitForVersion(index, timeout: .seconds(5)))
        // A restart elects the controller again, and its no-op lands after the command.
        await cluster.stop(0)
        try await cluster.start(0)
        _ = try #require(await cluster.leader())
        let moved = await image.waitForVersion(index + 1, timeout: .seconds(10))
        #expect(moved, "the follower never saw the new leader's no-op")
        let applied = await image.state.lastAppliedIndex
        #expect(applied == index)
        // The version moved on, the image did not: the next change is still to come.
        #expect(await image.version > applied)
        #expect(await !image.waitForApplied(after: applied, timeout: .milliseconds(300)))
        let waiter = Task { await image.waitForApplied(after: applied, timeout: .seconds(10)) }
        let (_, next) = try await client.writeWithIndex(.createTopics([topic("second")]))
        #expect(await waiter.value)
        #expect(await image.state.lastAppliedIndex == next)
        #expect(await image.state.topicNames.contains("second"))
    }

    /// A node that starts after much has been written catches up over several answers (each holds at
    /// most `maxEntries` commands). A prefix of the log is the cluster long ago, so nothing of it may
    /// be published: the first image anyone sees already holds every command written before the start.
    @Test func aStartingFollowerPublishesOnlyTheCaughtUpImage() async throws {
        let cluster = try InProcessCluster(count: 1)
        defer { cluster.cleanup() }
        try await cluster.startAll()
        _ = try #require(await cluster.leader())
        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        var last: UInt64 = 0
        for k in 0..<12 { last = try await client.writeWithIndex(.createTopics([topic("early\(k)")])).1 }
        let image = MetadataFollower(client: client, logger: testLogger, maxEntries: 3)
        let versions = await image.versions()
        let following = Task { await image.run() }
        defer { following.cancel() }
        var published: [UInt64] = []
        var namesAtFirstImage: [String] = []
        for await version in versions where version > 0 {
            published.append(version)
            namesAtFirstImage = await image.state.topicNames
            break
        }
        #expect(published.first.map { $0 >= last } == true, "first image at \(published), the log was at \(last) before the start")
        for k in 0..<12 { #expect(namesAtFirstImage.contains("early\(k)"), "early\(k) missing from the first image") }
        // Once caught up, later changes are applied and published as before.
        let (_, next) = try await client.writeWithIndex(.createTopics([topic("later")]))
        #expect(await image.waitForVersion(next, timeout: .seconds(5)))
        #expect(await image.state.topicNames.contains("later"))
        await cluster.stopAll()
    }

    @Test func threeControllersElectReplicateFailOverAndRecover() async throws {
        let cluster = try InProcessCluster()
        defer { cluster.cleanup() }
        try await cluster.startAll()
        let leader = try #require(await cluster.leader())

        // A client that first talks to a follower is redirected by NOT_CONTROLLER.
        let follower = (leader + 1) % 3
        let client = ControllerClient(endpoints: [cluster.endpoints[follower]], logger: testLogger)
        var acknowledged: [String] = []
        let first = try await client.write(.createTopics([topic("alpha", partitions: 3)]))
        guard case .items(let items) = first else { Issue.record("unexpected \(first)"); return }
        #expect(items.map(\.errorCode) == [0])
        acknowledged.append("alpha")
        #expect(await client.currentLeader == cluster.endpoints[leader])

        // A metadata follower reading from a follower controller sees the change.
        let followerClient = ControllerClient(endpoints: [cluster.endpoints[follower]], logger: testLogger)
        let image = MetadataFollower(client: followerClient, logger: testLogger)
        let following = Task { await image.run() }
        let (_, index) = try await client.writeWithIndex(.createTopics([topic("beta")]))
        acknowledged.append("beta")
        #expect(await image.waitForVersion(index, timeout: .seconds(5)))
        #expect(await image.state.topicNames.contains("beta"))
        #expect(await image.state.topics["alpha"]?.partitions.count == 3)

        // Stop the leader: another takes over and accepts writes through the same client.
        await cluster.stop(leader)
        let clientAll = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let newLeader = try #require(await cluster.leader(excluding: leader))
        #expect(newLeader != leader)
        for k in 0..<5 {
            _ = try await clientAll.write(.createTopics([topic("after\(k)")]))
            acknowledged.append("after\(k)")
        }

        // Restart everything: every acknowledged write is there.
        try await cluster.start(leader)
        await cluster.stopAll()
        try await cluster.startAll()
        let finalClient = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let (_, lastIndex) = try await finalClient.writeWithIndex(.createTopics([topic("final")]))
        acknowledged.append("final")
        let check = MetadataFollower(client: ControllerClient(endpoints: cluster.endpoints, logger: testLogger), logger: testLogger)
        let checking = Task { await check.run() }
        #expect(await check.waitForVersion(lastIndex, timeout: .seconds(10)))
        let names = await check.state.topicNames
        for name in acknowledged { #expect(names.contains(name), "missing \(name)") }
        checking.cancel()
        following.cancel()
        await cluster.stopAll()
    }

    @Test func followerBehindTheCompactedLogCatchesUpBySnapshotAndKeepsItAcrossRestart() async throws {
        let cluster = try InProcessCluster()
        cluster.configure = {
            $0.snapshotThreshold = 20
            $0.entriesKeptAfterSnapshot = 3
            $0.appliedStateInterval = 1000
        }
        defer { cluster.cleanup() }
        try await cluster.startAll()
        let leader = try #require(await cluster.leader())
        let lagging = (leader + 1) % 3
        await cluster.stop(lagging)
        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        var lastIndex: UInt64 = 0
        for k in 0..<60 { lastIndex = try await client.writeWithIndex(.createTopics([topic("snap\(k)")])).index }
        let leaderNode = try #require(cluster.services[leader]?.node)
        #expect(await leaderNode.logStartForTesting > 0)

        // The restarted follower's next entry is gone from the leader's log: it must take the snapshot.
        try await cluster.start(lagging)
        let node = try #require(cluster.services[lagging]?.node)
        let target = lastIndex
        #expect(await node.waitForStatus(timeout: .seconds(10)) { $0.appliedIndex >= target })
        #expect(await node.metadata.topicNames == (await leaderNode.metadata.topicNames))

        // What it installed is durable: after a restart it still has everything, even alone.
        await cluster.stopAll()
        try await cluster.start(lagging)
        let restarted = try #require(cluster.services[lagging]?.node)
        let restoredAt = await restarted.currentStatus.appliedIndex
        #expect(restoredAt >= 40)
        #expect(await restarted.metadata.topicNames.count >= 40)
        await cluster.stopAll()
    }

    @Test func silentNodeIsFencedAndUnfencedWhenItHeartbeatsAgain() async throws {
        let cluster = try InProcessCluster(count: 1, sessionTimeout: .milliseconds(1000))
        defer { cluster.cleanup() }
        try await cluster.startAll()
        _ = try #require(await cluster.leader())
        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let registration = try await client.register(
            NodeRegistration(id: 7, kind: .broker, zone: "a", listener: "127.0.0.1:9092", admin: "127.0.0.1:9093"))
        #expect(registration.incarnation > 0)
        #expect(registration.sessionTimeout == .milliseconds(1000))

        let image = MetadataFollower(client: client, logger: testLogger)
        let following = Task { await image.run() }
        #expect(await image.waitForVersion(registration.metadataVersion, timeout: .seconds(5)))
        #expect(await image.state.nodes[7]?.state == .active)

        // Heartbeats keep it active past the timeout.
        let beating = Task {
            await client.runHeartbeats(nodeId: 7, incarnation: registration.incarnation, interval: .milliseconds(100)) { 0 }
        }
        // Time passing beyond the 1 s session timeout is the thing under test: nothing happens to wait for.
        try await Task.sleep(for: .milliseconds(1500))
        #expect(await image.state.nodes[7]?.state == .active)

        // Silence: fenced after the session timeout.
        beating.cancel()
        let fenced = try await withTimeout(.seconds(5), "fence") {
            for await _ in await image.versions() {
                if await image.state.nodes[7]?.state == .fenced { return true }
            }
            return false
        }
        #expect(fenced)

        // A stale incarnation is refused; the right one unfences.
        await #expect(throws: ControllerClientError.self) {
            _ = try await client.heartbeat(nodeId: 7, incarnation: registration.incarnation + 100, metadataVersion: 0)
        }
        #expect(try await client.heartbeat(nodeId: 7, incarnation: registration.incarnation, metadataVersion: 0))
        let unfenced = try await withTimeout(.seconds(5), "unfence") {
            for await _ in await image.versions() {
                if await image.state.nodes[7]?.state == .active { return true }
            }
            return false
        }
        #expect(unfenced)
        following.cancel()
        await cluster.stopAll()
    }
}
