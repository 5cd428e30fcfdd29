import KafkaTransport
import DevCluster
import FloeService
import Foundation
import NIOCore
import NIOPosix
import TestKit
import Testing

/// `floe dev` end to end: the real `floe` binary supervising stand-in controllers (ServiceExample under the name floe-controller).
@Suite struct FloeDevTests {
    /// Polls `condition` every 50 ms for at most 30 s; the services are other processes, so there is no event to await.
    func eventually(_ condition: () async -> Bool) async -> Bool {
        await waitUntil(timeout: .seconds(30), every: .milliseconds(50), condition)
    }

    @Test func devClusterStartsRestartsReportsAndStops() async throws {
        let products = try #require(productsDirectory(), "build with `swift build --build-tests` first")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("floe-dev-e2e-\(UUID().uuidString)").path
        let bin = root + "/bin"
        let data = root + "/data"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createSymbolicLink(atPath: bin + "/floe-controller", withDestinationPath: products + "/ServiceExample")

        // Only the controllers run (base+98…100, admin base+198…200); below the ephemeral range.
        let base = try freeBasePort(offsets: Array(98...100) + Array(198...200), slots: stride(from: 10_100, to: 32_000, by: 350))
        var environment = ProcessInfo.processInfo.environment
        environment["FLOE_BIN_DIR"] = bin
        let floeLog = root + "/floe.log"
        let floe = try ChildProcess.spawn(
            executable: products + "/floe",
            arguments: ["dev", "--controllers", "3", "--data-dir", data, "--base-port", "\(base)", "--grace-period", "5"],
            environment: environment, logPath: floeLog
        )
        var floeExited = false
        defer { if !floeExited { ChildProcess.signal(floe, SIGKILL) } }
        let clusterPath = data + "/cluster.json"

        let allRunning = await eventually {
            guard let file = try? ClusterFile.read(from: clusterPath) else { return false }
            return file.services.count == 3 && file.services.allSatisfy { $0.pid != nil }
        }
        #expect(allRunning)
        let file = try ClusterFile.read(from: clusterPath)
        #expect(file.bootstrap == "")
        #expect(file.services.map(\.kind) == ["controller", "controller", "controller"])
        #expect(file.services.map(\.admin) == (0..<3).map { "127.0.0.1:\(base + 198 + $0)" })

        let announced = await eventually {
            ((try? String(contentsOfFile: floeLog, encoding: .utf8)) ?? "").contains("Ctrl-C stops the cluster.")
        }
        #expect(announced)
        let output = try String(contentsOfFile: floeLog, encoding: .utf8)
        #expect(output.contains("skipped (no executable in \(bin)): wal-writer, broker, zone-router, compactor"))
        #expect(output.contains("No brokers yet"))

        let status = try await runToCompletion(products + "/floe", ["dev", "status", "--data-dir", data], logPath: root + "/status.log")
        #expect(status.exit == .exited(0))
        let statusLines = status.output.split(separator: "\n").filter { $0.hasPrefix("controller") }
        #expect(statusLines.count == 3)
        #expect(statusLines.allSatisfy { $0.contains(" yes ") && $0.contains("role=example") && $0.contains("voters=1@127.0.0.1:\(base + 98)") })

        let victim = try #require(file.services[1].pid)
        #expect(ChildProcess.signal(victim, SIGKILL))
        let replaced = await eventually {
            guard let current = try? ClusterFile.read(from: clusterPath), let pid = current.services[1].pid else { return false }
            guard pid != victim, current.services[1].restarts == 1, let admin = try? KafkaEndpoint(parsing: current.services[1].admin) else { return false }
            // Ready means its signal handlers are installed, so the SIGTERM below drains it rather than killing it.
            return (try? await AdminClient.get(admin, path: "/readyz", timeout: .milliseconds(500)))?.status == 200
        }
        #expect(replaced)
        let pids = try ClusterFile.read(from: clusterPath).services.compactMap(\.pid)

        #expect(ChildProcess.signal(floe, SIGTERM))
        let exit = await ChildProcess.waitForExit(floe)
        floeExited = true
        #expect(exit == .exited(0))
        for pid in pids { #expect(!ChildProcess.isAlive(pid)) }
        let stopped = try ClusterFile.read(from: clusterPath)
        #expect(stopped.services.allSatisfy { $0.pid == nil && $0.state == "stopped" })
        // SIGTERM reached the services and they drained rather than being killed.
        let controllerLog = try String(contentsOfFile: data + "/logs/controller-1.log", encoding: .utf8)
        #expect(controllerLog.contains("drained, exiting"))
        let floeOutput = try String(contentsOfFile: floeLog, encoding: .utf8)
        #expect(floeOutput.components(separatedBy: "stopped: exited with code 0").count - 1 == 3)
        #expect(floeOutput.contains("controller-2 (pid \(victim)) killed by signal 9"))
        #expect(floeOutput.contains("restarting controller-2 (restart 1"))
    }

    @Test func serviceConfiguredOnlyByEnvironmentServesAdminAndDrainsOnSIGTERM() async throws {
        let products = try #require(productsDirectory(), "build with `swift build --build-tests` first")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("floe-svc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let admin = KafkaEndpoint(host: "127.0.0.1", port: try freePort())
        var environment = ProcessInfo.processInfo.environment
        environment["FLOE_NODE_ID"] = "12"
        environment["FLOE_ZONE"] = "zone-e"
        environment["FLOE_LISTEN"] = "127.0.0.1:1"
        environment["FLOE_ADMIN"] = admin.description
        environment["FLOE_KIND"] = "env-test"
        let log = root + "/service.log"
        let pid = try ChildProcess.spawn(executable: products + "/ServiceExample", arguments: ["--zone", "zone-cli"], environment: environment, logPath: log)
        var exited = false
        defer { if !exited { ChildProcess.signal(pid, SIGKILL) } }

        var status: AdminClient.Response?
        let answered = await eventually {
            status = try? await AdminClient.get(admin, path: "/status", timeout: .milliseconds(500))
            return status != nil
        }
        #expect(answered)
        let json = try JSONSerialization.jsonObject(with: Data(status?.body ?? [])) as? [String: Any]
        #expect(json?["node_id"] as? Int == 12)
        #expect(json?["zone"] as? String == "zone-cli")
        #expect(json?["kind"] as? String == "env-test")

        #expect(ChildProcess.signal(pid, SIGTERM))
        let exit = await ChildProcess.waitForExit(pid)
        exited = true
        #expect(exit == .exited(0))
        let output = try String(contentsOfFile: log, encoding: .utf8)
        #expect(output.contains("graceful shutdown: draining"))
        #expect(output.contains("drained, exiting"))
    }

    @Test(.timeLimit(.minutes(1))) func portsAlreadyInUseStopFloeDevBeforeAnyServiceStarts() async throws {
        let products = try #require(productsDirectory(), "build with `swift build --build-tests` first")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("floe-dev-ports-\(UUID().uuidString)").path
        let bin = root + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createSymbolicLink(atPath: bin + "/floe-controller", withDestinationPath: products + "/ServiceExample")
        // Something listens on the controller's admin port (base + 198) of the plan.
        let holder = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { $0.close() }
            .bind(host: "127.0.0.1", port: 0).get()
        let held = try #require(holder.localAddress?.port)
        try #require(held > 198)
        var environment = ProcessInfo.processInfo.environment
        environment["FLOE_BIN_DIR"] = bin
        let log = root + "/floe.log"
        let pid = try ChildProcess.spawn(
            executable: products + "/floe",
            arguments: ["dev", "--data-dir", root + "/data", "--base-port", "\(held - 198)", "--grace-period", "2"],
            environment: environment, logPath: log)
        let exit = await ChildProcess.waitForExit(pid)
        try await holder.close()
        let output = try String(contentsOfFile: log, encoding: .utf8)
        #expect(exit == .exited(64), "\(output)")
        #expect(output.contains("ports of this cluster are already in use ("), "\(output)")
        #expect(output.contains("controller-1 admin 127.0.0.1:\(held)"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: root + "/data/cluster.json"))
    }

    @Test func invalidEnvironmentValueStopsTheServiceWithAClearMessage() async throws {
        let products = try #require(productsDirectory(), "build with `swift build --build-tests` first")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("floe-env-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var environment = ProcessInfo.processInfo.environment
        environment["FLOE_LOG_LEVEL"] = "loud"
        let log = root + "/out.log"
        let pid = try ChildProcess.spawn(
            executable: products + "/ServiceExample", arguments: ["--node-id", "1", "--listen", "127.0.0.1:1", "--admin", "127.0.0.1:2"],
            environment: environment, logPath: log
        )
        let exit = await ChildProcess.waitForExit(pid)
        #expect(exit == .exited(64))
        let output = try String(contentsOfFile: log, encoding: .utf8)
        #expect(output.contains("environment variable FLOE_LOG_LEVEL='loud' is invalid"))
        #expect(output.contains("not one of trace, debug, info"))
    }

    func runToCompletion(_ executable: String, _ arguments: [String], logPath: String) async throws -> (exit: ChildExit, output: String) {
        let pid = try ChildProcess.spawn(executable: executable, arguments: arguments, environment: ProcessInfo.processInfo.environment, logPath: logPath)
        let exit = await ChildProcess.waitForExit(pid)
        return (exit, try String(contentsOfFile: logPath, encoding: .utf8))
    }
}
