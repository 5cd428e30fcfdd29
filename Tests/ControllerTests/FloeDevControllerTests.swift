import ClusterMetadata
import ControllerClient
import DevCluster
import Foundation
import KafkaTransport
import TestKit
import Testing

/// `floe dev --controllers 3` end to end: metadata writes keep being acknowledged while the leader
/// is SIGKILLed (floe dev restarts it), and after stopping and restarting the whole dev cluster on
/// the same data directory every acknowledged write is still there.
@Suite(.serialized) struct FloeDevControllerTests {
    /// `floe dev` as a child process on its own data directory and port range.
    final class FloeDev: Sendable {
        let binary: String
        let dataDirectory: String
        let basePort: Int
        private let process = ProcessSlot()

        init(binary: String, dataDirectory: String, basePort: Int) {
            self.binary = binary
            self.dataDirectory = dataDirectory
            self.basePort = basePort
        }

        func start() throws {
            try process.start(
                binary,
                [
                    "dev", "up", "--controllers", "3", "--data-dir", dataDirectory, "--base-port", "\(basePort)",
                    "--log-level", "warning",
                ],
                logPath: "\(dataDirectory)/floe-dev.out")
        }

        /// Ctrl-C: floe dev stops its children and exits.
        func interrupt() -> Int32? { process.stop(SIGINT) }

        func kill() { process.stop(SIGKILL) }

        var clusterFile: ClusterFile? { try? ClusterFile.read(from: "\(dataDirectory)/cluster.json") }

        /// Waits (bounded: 30 s) until cluster.json, which floe dev rewrites as its children change, lists three
        /// running controllers that satisfy `condition`.
        func waitForControllers(_ what: String, _ condition: @escaping @Sendable ([ClusterFile.Service]) -> Bool) async throws
            -> [ClusterFile.Service]
        {
            var found: [ClusterFile.Service] = []
            let done = try await waitUntil(timeout: .seconds(30)) {
                guard let file = self.clusterFile else { return false }
                let controllers = file.services.filter { $0.kind == "controller" }.sorted { $0.nodeID < $1.nodeID }
                guard controllers.count == 3, controllers.allSatisfy({ $0.state == "running" && $0.pid != nil }), condition(controllers)
                else { return false }
                found = controllers
                return true
            }
            guard done else {
                let services = clusterFile?.services.map { "\($0.kind)-\($0.nodeID) \($0.state) pid \($0.pid.map(String.init) ?? "-")" } ?? []
                let pid = process.process?.pid ?? -1
                let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))?.split(separator: "\n").prefix(3).joined(separator: " ") ?? "gone"
                throw TestTimeout(what: "\(what); floe dev pid \(pid) (\(status)); services \(services); floe dev log:\n\(fileTail("\(dataDirectory)/floe-dev.out", lines: 40))")
            }
            return found
        }
    }

    /// A base port where every port this cluster binds is free: the controllers (base+98…+100, admin
    /// +198…+200), the WAL writer (+118, +218) and the broker (+0, +300). The slots lie below the
    /// kernel's ephemeral range (32768 and up), so an outgoing connection elsewhere cannot take one
    /// between this check and floe dev's bind; they do not overlap DevClusterProcess's slots.
    static func freeBasePort() throws -> Int {
        try TestKit.freeBasePort(
            offsets: Array(98...100) + Array(198...200) + [118, 218, 0, 300], slots: stride(from: 10_000, to: 20_000, by: 350))
    }

    @Test(.timeLimit(.minutes(3))) func leaderKilledUnderFloeDevLosesNoAcknowledgedWrite() async throws {
        let binary = try #require(builtProduct("floe"), "floe not built next to the tests")
        let directory = try temporaryDirectory("floe-dev")
        defer { removeDirectory(directory) }
        let dev = FloeDev(binary: binary, dataDirectory: directory, basePort: try Self.freeBasePort())
        try dev.start()
        defer { dev.kill() }

        let controllers = try await dev.waitForControllers("three running controllers") { _ in true }
        let endpoints = controllers.map { service in
            let parts = service.listen.split(separator: ":")
            return KafkaEndpoint(host: String(parts[0]), port: Int(parts[1]) ?? 0)
        }
        let client = ControllerClient(endpoints: endpoints, logger: testLogger, requestTimeout: .seconds(2), retryDeadline: .seconds(20))
        let acknowledged = AckList()
        let writer = startTopicWriter(client, into: acknowledged)
        try await acknowledged.waitFor(30)

        // SIGKILL the leader: a new leader takes writes, and floe dev restarts the killed process.
        var leaderIndex: Int?
        for (k, endpoint) in endpoints.enumerated() {
            if let status = try? await client.describe(endpoint), status.role == "leader" { leaderIndex = k }
        }
        let killed = controllers[try #require(leaderIndex)]
        let killedPid = try #require(killed.pid)
        #expect(Foundation.kill(killedPid, SIGKILL) == 0)
        let atKill = acknowledged.withLock { $0.count }
        try await acknowledged.waitFor(atKill + 30)
        let restarted = try await dev.waitForControllers("controller \(killed.nodeID) restarted") { services in
            services.contains { $0.nodeID == killed.nodeID && $0.pid != killedPid && $0.restarts >= 1 }
        }
        #expect(restarted.count == 3)
        try await acknowledged.waitFor(atKill + 50)
        writer.cancel()
        _ = await writer.value

        // Stop the whole dev cluster (Ctrl-C) and start it again on the same data directory.
        #expect(dev.interrupt() == 0)
        for service in restarted { if let pid = service.pid { #expect(Foundation.kill(pid, 0) != 0, "controller \(service.nodeID) outlived floe dev") } }
        try dev.start()
        _ = try await dev.waitForControllers("controllers after the restart") { services in
            !services.contains { service in restarted.contains { $0.pid == service.pid } }
        }
        try await expectEveryAcknowledgedWrite(acknowledged, endpoints: endpoints, atLeast: 80)
        #expect(dev.interrupt() == 0)
    }
}
