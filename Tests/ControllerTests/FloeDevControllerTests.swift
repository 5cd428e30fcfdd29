import ClusterMetadata
import ControllerClient
import DevCluster
import Foundation
import KafkaTransport
import Testing

/// `floe dev --controllers 3` end to end: metadata writes keep being acknowledged while the leader
/// is SIGKILLed (floe dev restarts it), and after stopping and restarting the whole dev cluster on
/// the same data directory every acknowledged write is still there.
@Suite(.serialized) struct FloeDevControllerTests {
    /// `floe dev` as a child process on its own data directory and port range.
    final class FloeDev: @unchecked Sendable {
        let binary: String
        let dataDirectory: String
        let basePort: Int
        private var process: Process?

        init(binary: String, dataDirectory: String, basePort: Int) {
            self.binary = binary
            self.dataDirectory = dataDirectory
            self.basePort = basePort
        }

        func start() throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "dev", "up", "--controllers", "3", "--data-dir", dataDirectory, "--base-port", "\(basePort)",
                "--log-level", "warning",
            ]
            let logPath = "\(dataDirectory)/floe-dev.out"
            FileManager.default.createFile(atPath: logPath, contents: nil)
            if let handle = FileHandle(forWritingAtPath: logPath) {
                handle.seekToEndOfFile()
                process.standardOutput = handle
                process.standardError = handle
            }
            try process.run()
            self.process = process
        }

        /// Ctrl-C: floe dev stops its children and exits.
        func interrupt() -> Int32? {
            guard let process else { return nil }
            process.interrupt()
            process.waitUntilExit()
            self.process = nil
            return process.terminationStatus
        }

        func kill() {
            guard let process else { return }
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            self.process = nil
        }

        var clusterFile: ClusterFile? { try? ClusterFile.read(from: "\(dataDirectory)/cluster.json") }

        /// Waits until cluster.json lists three running controllers that satisfy `condition`.
        func waitForControllers(_ what: String, _ condition: @escaping @Sendable ([ClusterFile.Service]) -> Bool) async throws
            -> [ClusterFile.Service]
        {
            try await withTimeout(.seconds(30), what) {
                for _ in 0..<3000 {
                    if let file = self.clusterFile {
                        let controllers = file.services.filter { $0.kind == "controller" }.sorted { $0.nodeID < $1.nodeID }
                        if controllers.count == 3, controllers.allSatisfy({ $0.state == "running" && $0.pid != nil }),
                           condition(controllers)
                        {
                            return controllers
                        }
                    }
                    try await Task.sleep(for: .milliseconds(10))
                }
                throw TestTimeout(what: what)
            }
        }
    }

    /// A base port whose controller ports (base+98…+100) and admin ports (base+198…+200) are free.
    static func freeBasePort() throws -> Int {
        for base in stride(from: 31_000, to: 60_000, by: 350) {
            let ports = (98...100).map { base + $0 } + (198...200).map { base + $0 }
            if ports.allSatisfy(portIsFree) { return base }
        }
        throw TestTimeout(what: "a free port range for floe dev")
    }

    static func portIsFree(_ port: Int) -> Bool {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    static func floeBinary() -> String? {
        guard let controller = controllerBinary() else { return nil }
        let floe = URL(fileURLWithPath: controller).deletingLastPathComponent().appendingPathComponent("floe").path
        return FileManager.default.isExecutableFile(atPath: floe) ? floe : nil
    }

    @Test(.timeLimit(.minutes(3))) func leaderKilledUnderFloeDevLosesNoAcknowledgedWrite() async throws {
        let binary = try #require(Self.floeBinary(), "floe not built next to the tests")
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
