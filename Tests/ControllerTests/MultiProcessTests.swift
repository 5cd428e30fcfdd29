import ClusterMetadata
import ControllerClient
import FloeService
import Foundation
import KafkaTransport
import Synchronization
import Testing

/// Finds `floe-controller` in the build directory that holds this test bundle.
func controllerBinary() -> String? {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("floe-controller").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    let fallback = FileManager.default.currentDirectoryPath + "/.build/debug/floe-controller"
    return FileManager.default.isExecutableFile(atPath: fallback) ? fallback : nil
}

/// Three `floe-controller` processes on loopback.
final class ControllerProcesses: @unchecked Sendable {
    let binary: String
    let ports: [Int]
    let directory: String
    private var processes: [Process?] = [nil, nil, nil]

    init(binary: String) throws {
        self.binary = binary
        ports = try freePorts(3)
        directory = try temporaryDirectory("processes")
    }

    var endpoints: [KafkaEndpoint] { ports.map { KafkaEndpoint(host: "127.0.0.1", port: $0) } }

    func start(_ k: Int) throws {
        let voters = ports.enumerated().map { "\($0.offset + 1)@127.0.0.1:\($0.element)" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--node-id", "\(k + 1)", "--listen", "127.0.0.1:\(ports[k])", "--admin", "127.0.0.1:0", "--voters", voters,
            "--data-dir", "\(directory)/c\(k + 1)", "--log-level", "warning", "--election-timeout-ms", "300",
        ]
        let log = FileManager.default.createFile(atPath: "\(directory)/log\(k + 1)", contents: nil)
        if log, let handle = FileHandle(forWritingAtPath: "\(directory)/log\(k + 1)") {
            handle.seekToEndOfFile()
            process.standardError = handle
            process.standardOutput = handle
        }
        try process.run()
        processes[k] = process
    }

    func kill(_ k: Int) {
        guard let process = processes[k] else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        processes[k] = nil
    }

    func terminate(_ k: Int) -> Int32? {
        guard let process = processes[k] else { return nil }
        process.terminate()
        process.waitUntilExit()
        processes[k] = nil
        return process.terminationStatus
    }

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
    func withLock<T>(_ body: (inout [String]) -> T) -> T { names.withLock { body(&$0) } }

    /// Waits until at least `count` writes were acknowledged (bounded: 20 s).
    func waitFor(_ count: Int) async throws {
        try await withTimeout(.seconds(20), "\(count) acknowledged writes") {
            for _ in 0..<4000 {
                if self.withLock({ $0.count }) >= count { return }
                try await Task.sleep(for: .milliseconds(5))
            }
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
                    acknowledged.withLock { $0.append(name) }
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
        let binary = try #require(controllerBinary(), "floe-controller not built next to the tests")
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
        let binary = try #require(controllerBinary(), "floe-controller not built next to the tests")
        let ports = try freePorts(2)
        let directory = try temporaryDirectory("env")
        defer { removeDirectory(directory) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = []
        var environment = ProcessInfo.processInfo.environment
        environment["FLOE_NODE_ID"] = "4"
        environment["FLOE_ZONE"] = "z1"
        environment["FLOE_LISTEN"] = "127.0.0.1:\(ports[0])"
        environment["FLOE_ADMIN"] = "127.0.0.1:\(ports[1])"
        environment["FLOE_VOTERS"] = "4@127.0.0.1:\(ports[0])"
        environment["FLOE_DATA_DIR"] = directory
        environment["FLOE_LOG_LEVEL"] = "warning"
        process.environment = environment
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        let admin = HostPort(host: "127.0.0.1", port: ports[1])
        let ready = try await withTimeout(.seconds(20), "readyz") {
            for _ in 0..<400 {
                if let response = try? await AdminClient.get(admin, path: "/readyz"), response.status == 200 { return true }
                try await Task.sleep(for: .milliseconds(50))
            }
            return false
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

        process.terminate()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}
