import ClusterMetadata
import ControllerClient
import FloeService
import Foundation
import KafkaTransport
import Synchronization
import TestKit
import Testing

/// Three `floe-controller` processes on loopback.
final class ControllerProcesses: Sendable {
    let binary: String
    let ports: [Int]
    let directory: String
    private let processes = [ProcessSlot(), ProcessSlot(), ProcessSlot()]

    init(binary: String) throws {
        self.binary = binary
        ports = try freePorts(3)
        directory = try temporaryDirectory("controller-processes")
    }

    var endpoints: [KafkaEndpoint] { ports.map { KafkaEndpoint(host: "127.0.0.1", port: $0) } }

    func start(_ k: Int) throws {
        let voters = ports.enumerated().map { "\($0.offset + 1)@127.0.0.1:\($0.element)" }.joined(separator: ",")
        try processes[k].start(
            binary,
            [
                "--node-id", "\(k + 1)", "--listen", "127.0.0.1:\(ports[k])", "--admin", "127.0.0.1:0", "--voters", voters,
                "--data-dir", "\(directory)/c\(k + 1)", "--log-level", "warning", "--election-timeout-ms", "300",
            ],
            logPath: "\(directory)/log\(k + 1)")
    }

    func kill(_ k: Int) { processes[k].stop(SIGKILL) }

    func terminate(_ k: Int) -> Int32? { processes[k].stop(SIGTERM) }

    func killAll() {
        for k in 0..<3 { kill(k) }
    }

    func cleanup() {
        killAll()
        removeDirectory(directory)
    }
}

/// Names whose writes were acknowledged, shared between the writer task and the test.
final class AckList: Sendable {
    private let names = Mutex<[String]>([])
    /// The count after each acknowledgement; only the newest matters to a waiter.
    private let counts = AsyncStream<Int>.makeStream(bufferingPolicy: .bufferingNewest(1))

    func withLock<T>(_ body: (inout [String]) -> T) -> T { names.withLock { body(&$0) } }

    func append(_ name: String) {
        let count = names.withLock { names in
            names.append(name)
            return names.count
        }
        counts.continuation.yield(count)
    }

    /// Waits until at least `count` writes were acknowledged (bounded: 20 s; one waiter at a time).
    func waitFor(_ count: Int) async throws {
        if withLock({ $0.count }) >= count { return }
        let counts = self.counts.stream
        try await withTimeout(.seconds(20), "\(count) acknowledged writes") {
            for await seen in counts where seen >= count { return }
            throw TestTimeout(what: "\(count) acknowledged writes")
        }
    }
}

/// Streams `createTopics` writes through `client` until cancelled, recording the acknowledged ones.
func startTopicWriter(_ client: ControllerClient, into acknowledged: AckList) -> Task<Void, Never> {
    Task {
        var k = 0
        while !Task.isCancelled, k < 100_000 {
            let name = "topic-\(k)"
            k += 1
            do {
                let result = try await client.write(.createTopics([topic(name)]))
                if case .items(let items) = result, items.first?.errorCode == 0 {
                    acknowledged.append(name)
                }
            } catch is CancellationError {
                return
            } catch {
                // Unacknowledged: it may or may not have committed; only acknowledged writes are checked.
            }
        }
    }
}

/// Checks through a follower controller's metadata image that every acknowledged write survived.
func expectEveryAcknowledgedWrite(_ acknowledged: AckList, endpoints: [KafkaEndpoint], atLeast: Int) async throws {
    let fresh = ControllerClient(endpoints: endpoints, logger: testLogger, retryDeadline: .seconds(20))
    let (_, index) = try await fresh.writeWithIndex(.createTopics([topic("after-restart")]))
    var followerIndex = 0
    for (k, endpoint) in endpoints.enumerated() {
        if let status = try? await fresh.describe(endpoint), status.role != "leader" { followerIndex = k }
    }
    let image = MetadataFollower(client: ControllerClient(endpoints: [endpoints[followerIndex]], logger: testLogger), logger: testLogger)
    let following = Task { await image.run() }
    defer { following.cancel() }
    #expect(await image.waitForVersion(index, timeout: .seconds(10)))
    let names = Set(await image.state.topicNames)
    let acked = acknowledged.withLock { $0 }
    #expect(acked.count >= atLeast)
    let missing = acked.filter { !names.contains($0) }
    #expect(missing.isEmpty, "acknowledged but missing: \(missing)")
    #expect(names.contains("after-restart"))
}

@Suite(.serialized) struct MultiProcessTests {
    @Test(.timeLimit(.minutes(2))) func leaderKilledMidStreamLosesNoAcknowledgedWrite() async throws {
        let binary = try #require(builtProduct("floe-controller"), "floe-controller not built next to the tests")
        let cluster = try ControllerProcesses(binary: binary)
        defer { cluster.cleanup() }
        for k in 0..<3 { try cluster.start(k) }

        let client = ControllerClient(endpoints: cluster.endpoints, logger: testLogger, requestTimeout: .seconds(2), retryDeadline: .seconds(20))
        let acknowledged = AckList()
        let writer = startTopicWriter(client, into: acknowledged)
        try await acknowledged.waitFor(30)
        var leader: Int?
        for (k, endpoint) in cluster.endpoints.enumerated() {
            if let status = try? await client.describe(endpoint), status.role == "leader" { leader = k }
        }
        let killed = try #require(leader)
        cluster.kill(killed)
        let atKill = acknowledged.withLock { $0.count }
        try await acknowledged.waitFor(atKill + 30)
        try cluster.start(killed)
        try await acknowledged.waitFor(atKill + 50)
        writer.cancel()
        _ = await writer.value

        // Crash every process at once, then bring all three back.
        cluster.killAll()
        for k in 0..<3 { try cluster.start(k) }
        try await expectEveryAcknowledgedWrite(acknowledged, endpoints: cluster.endpoints, atLeast: 80)

        // SIGTERM is a clean exit.
        for k in 0..<3 { #expect(cluster.terminate(k) == 0) }
    }

    @Test(.timeLimit(.minutes(1))) func configuredFromEnvironmentWithAdminStatusAndReadiness() async throws {
        let binary = try #require(builtProduct("floe-controller"), "floe-controller not built next to the tests")
        let ports = try freePorts(2)
        let directory = try temporaryDirectory("env")
        defer { removeDirectory(directory) }
        var environment = ProcessInfo.processInfo.environment
        environment["FLOE_NODE_ID"] = "4"
        environment["FLOE_ZONE"] = "z1"
        environment["FLOE_LISTEN"] = "127.0.0.1:\(ports[0])"
        environment["FLOE_ADMIN"] = "127.0.0.1:\(ports[1])"
        environment["FLOE_VOTERS"] = "4@127.0.0.1:\(ports[0])"
        environment["FLOE_DATA_DIR"] = directory
        environment["FLOE_LOG_LEVEL"] = "warning"
        let process = try TestProcess(binary, environment: environment)
        defer { process.stop(SIGKILL) }

        let admin = KafkaEndpoint(host: "127.0.0.1", port: ports[1])
        // Another process: readiness shows only by asking.
        let ready = await waitUntil(timeout: .seconds(20), every: .milliseconds(50)) {
            (try? await AdminClient.get(admin, path: "/readyz"))?.status == 200
        }
        #expect(ready)
        let status = try await AdminClient.get(admin, path: "/status")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.body)) as? [String: Any])
        #expect(json["node_id"] as? Int == 4)
        #expect(json["kind"] as? String == "controller")
        #expect(json["zone"] as? String == "z1")
        #expect(json["incarnation"] as? Int == 0)
        #expect(json["role"] as? String == "leader")
        #expect(json["leader_id"] as? Int == 4)
        #expect(json["term"] as? Int ?? 0 >= 1)
        #expect(json["commit_index"] as? Int ?? 0 >= 1)

        #expect(process.stop(SIGTERM) == 0)
    }
}
