import KafkaTransport
import DevCluster
import FloeService
import Foundation
import Synchronization
import TestKit

/// Why a multi-process test step could not go on.
struct ClusterTestFailure: Error, CustomStringConvertible {
    var description: String
}

/// `floe dev up` as a child process on its own data directory and port range, for tests that run
/// real clients against the whole cluster.
final class DevClusterProcess: Sendable {
    let binary: String
    let dataDirectory: String
    let basePort: Int
    let zones: [String]
    let brokersPerZone: Int
    /// Extra `floe dev up` arguments, e.g. `--broker-arg=--producer-id-expiration-ms=1000`.
    let extraArguments: [String]
    private let process = ProcessSlot()
    private let keepData = Mutex(ProcessInfo.processInfo.environment["FLOE_KEEP_TEST_DATA"] != nil)

    init(binary: String, dataDirectory: String, basePort: Int, zones: [String], brokersPerZone: Int, extraArguments: [String] = []) {
        self.extraArguments = extraArguments
        self.binary = binary
        self.dataDirectory = dataDirectory
        self.basePort = basePort
        self.zones = zones
        self.brokersPerZone = brokersPerZone
    }

    var brokerCount: Int { zones.count * brokersPerZone }

    /// Builds the cluster from the products next to the test binary, in a fresh directory and on free ports.
    static func make(zones: [String] = ["a"], brokersPerZone: Int, name: String, extraArguments: [String] = []) throws -> DevClusterProcess {
        guard let binary = floeBinary() else { throw ClusterTestFailure(description: "floe is not built next to the tests (swift build --build-tests)") }
        let directory = try temporaryDirectory(name)
        let basePort = try freeBasePort(brokers: zones.count * brokersPerZone, zones: zones.count)
        return DevClusterProcess(
            binary: binary, dataDirectory: directory, basePort: basePort, zones: zones, brokersPerZone: brokersPerZone,
            extraArguments: extraArguments)
    }

    func start() throws {
        try process.start(
            binary,
            [
                "dev", "up", "--data-dir", dataDirectory, "--base-port", "\(basePort)", "--zones", zones.joined(separator: ","),
                "--brokers-per-zone", "\(brokersPerZone)",
                "--log-level", "info", "--grace-period", "10",
            ] + Self.retentionArguments(extraArguments) + Self.zoneRoutingArguments(extraArguments) + extraArguments,
            logPath: "\(dataDirectory)/floe-dev.out")
    }

    /// The client scripts write records with fixed timestamps from 2023 (for offsets_for_times checks), which
    /// Kafka's default retention of 7 days would delete as soon as the compactor checks; so these clusters keep
    /// data without a time limit unless a test sets its own retention.
    static func retentionArguments(_ extra: [String]) -> [String] {
        extra.contains { $0.contains("default-retention-ms") } ? [] : ["--compactor-arg=--default-retention-ms=-1"]
    }

    /// Most client tests check what a client sees of leaders in several zones (moves, fail-over, the WAL
    /// tail), so their clusters run with zone routing off; the zone tests pass `--broker-arg=--zone-routing=on`.
    static func zoneRoutingArguments(_ extra: [String]) -> [String] {
        extra.contains { $0.contains("zone-routing") } ? [] : ["--broker-arg=--zone-routing=off"]
    }

    /// SIGTERM: floe dev stops its children gracefully and exits; returns its exit status.
    @discardableResult
    func stop() -> Int32? { process.stop(SIGTERM) }

    /// SIGKILL floe dev and every service cluster.json still lists, for clean-up after a failure.
    func killAll() {
        let services = clusterFile?.services ?? []
        process.stop(SIGKILL)
        for service in services {
            if let pid = service.pid, isFloeService(pid) { kill(pid, SIGKILL) }
        }
    }

    /// Keeps the data directory (logs, WAL, objects) after ``tearDown()``; returns a note naming it
    /// for the failure message.
    func keepForInspection() -> String {
        keepData.withLock { $0 = true }
        return "(logs and data kept in \(dataDirectory))"
    }

    /// Stops the cluster and removes its directory, unless a failure or the environment
    /// (FLOE_KEEP_TEST_DATA) asked to keep it.
    func tearDown() {
        if stop() == nil { killAll() }
        let leftovers = (clusterFile?.services ?? []).compactMap(\.pid).filter(isFloeService)
        for pid in leftovers { kill(pid, SIGKILL) }
        if !keepData.withLock({ $0 }) {
            try? FileManager.default.removeItem(atPath: dataDirectory)
        }
    }

    var clusterFile: ClusterFile? { try? ClusterFile.read(from: "\(dataDirectory)/cluster.json") }

    /// The comma-separated broker addresses clients bootstrap from.
    var bootstrap: String { (0..<brokerCount).map { "127.0.0.1:\(basePort + $0)" }.joined(separator: ",") }

    /// Waits until cluster.json lists every service running with a pid, each answering /readyz, and
    /// `condition` holds; returns the services.
    @discardableResult
    func waitUntilReady(
        _ what: String, timeout: Duration = .seconds(60), _ condition: @Sendable ([ClusterFile.Service]) -> Bool = { _ in true }
    ) async throws -> [ClusterFile.Service] {
        var last = "cluster.json not written yet"
        var ready: [ClusterFile.Service] = []
        // Other processes: their state shows only in cluster.json and on their admin ports, so poll.
        let done = await waitUntil(timeout: timeout, every: .milliseconds(100)) {
            guard let file = clusterFile else { return false }
            let services = file.services
            let brokers = services.filter { $0.kind == "broker" }
            guard brokers.count == brokerCount, services.allSatisfy({ $0.state == "running" && $0.pid != nil }), condition(services) else {
                last = services.map { "\($0.kind)-\($0.nodeID) \($0.state)" }.joined(separator: ", ")
                return false
            }
            var notReady: [String] = []
            for service in services {
                guard let admin = try? KafkaEndpoint(parsing: service.admin) else { continue }
                let status = (try? await AdminClient.get(admin, path: "/readyz", timeout: .milliseconds(500)))?.status
                if status != 200 { notReady.append("\(service.kind)-\(service.nodeID)") }
            }
            last = "not ready: \(notReady.joined(separator: ", "))"
            ready = services
            return notReady.isEmpty
        }
        if done { return ready }
        throw ClusterTestFailure(description: "timed out after \(timeout) waiting for \(what): \(last)\n\(logTail())")
    }

    /// The last lines of floe dev's own output, for failure messages.
    func logTail(lines: Int = 30) -> String { fileTail("\(dataDirectory)/floe-dev.out", lines: lines) }

    private func isFloeService(_ pid: Int32) -> Bool {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe") else { return false }
        return URL(fileURLWithPath: exe).lastPathComponent.hasPrefix("floe-")
    }

    static func floeBinary() -> String? { builtProduct("floe") }

    /// A base port whose broker, controller and WAL writer ports (listen and admin) are all free. The
    /// slots lie below the kernel's ephemeral range (32768 and up), so an outgoing connection elsewhere
    /// cannot take one between this check and floe dev's bind.
    static func freeBasePort(brokers: Int, zones: Int) throws -> Int {
        let brokerPorts: [Int] = (0..<brokers).flatMap { j -> [Int] in [j, 300 + j] }
        let writerPorts: [Int] = (0..<zones).flatMap { z -> [Int] in [118 + z, 218 + z] }
        return try TestKit.freeBasePort(offsets: brokerPorts + writerPorts + [98, 198], slots: stride(from: 20_000, to: 32_000, by: 400))
    }
}

/// The Python client scripts under Tests/Compatibility/clients and how to run them.
enum ClientScripts {
    /// Debian's own interpreter: the only one that imports python3-confluent-kafka.
    static let debianPython = "/usr/bin/python3"

    static var directory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Compatibility/clients").path
    }

    /// The `python3` first on PATH (where pip installs confluent-kafka, kafka-python and aiokafka).
    static var pathPython: String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/python3"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return debianPython
    }

    /// What a finished (or killed) script left behind.
    struct Outcome: Sendable, CustomStringConvertible {
        var status: Int32
        var timedOut: Bool
        var output: String
        var description: String { "exit \(status)\(timedOut ? " (killed: over its time limit)" : "")\n\(output)" }
    }

    /// Runs `interpreter script arguments`, stdout and stderr into one file, killed after `timeout`.
    static func run(_ script: String, interpreter: String = pathPython, _ arguments: [String], timeout: Duration = .seconds(240)) async throws -> Outcome {
        let running = try start(script, interpreter: interpreter, arguments)
        return await running.wait(timeout: timeout)
    }

    /// Starts a script without waiting for it; stdout and stderr go to one file.
    static func start(_ script: String, interpreter: String = pathPython, _ arguments: [String]) throws -> RunningScript {
        let outputPath = NSTemporaryDirectory() + "floe-script-\(UUID().uuidString).out"
        let process = try TestProcess(interpreter, ["-u", "\(directory)/\(script)"] + arguments, logPath: outputPath)
        return RunningScript(process: process)
    }

    /// A script started by ``start(_:interpreter:_:)``.
    struct RunningScript: Sendable {
        let process: TestProcess
        var pid: Int32 { process.pid }
        var outputPath: String { process.logPath ?? "" }

        /// SIGKILLs a script nobody will wait for and removes its output file.
        func cancel() {
            process.signal(SIGKILL)
            try? FileManager.default.removeItem(atPath: outputPath)
        }

        /// Waits for the exit, SIGKILLing the script once `timeout` passes; returns its output.
        func wait(timeout: Duration) async -> Outcome {
            let outcome = await process.wait(timeout: timeout)
            let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "(no output)"
            try? FileManager.default.removeItem(atPath: outputPath)
            return Outcome(status: outcome.status, timedOut: outcome.timedOut, output: output)
        }
    }
}
