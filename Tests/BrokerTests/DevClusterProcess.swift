import DevCluster
import FloeService
import Foundation
import Synchronization

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
    private let process = Mutex<Process?>(nil)
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
        let directory = NSTemporaryDirectory() + "floe-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let basePort = try freeBasePort(brokers: zones.count * brokersPerZone, zones: zones.count)
        return DevClusterProcess(
            binary: binary, dataDirectory: directory, basePort: basePort, zones: zones, brokersPerZone: brokersPerZone,
            extraArguments: extraArguments)
    }

    func start() throws {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: binary)
        child.arguments = [
            "dev", "up", "--data-dir", dataDirectory, "--base-port", "\(basePort)", "--zones", zones.joined(separator: ","),
            "--brokers-per-zone", "\(brokersPerZone)",
            "--log-level", "info", "--grace-period", "10",
        ] + extraArguments
        let logPath = "\(dataDirectory)/floe-dev.out"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        if let handle = FileHandle(forWritingAtPath: logPath) {
            handle.seekToEndOfFile()
            child.standardOutput = handle
            child.standardError = handle
        }
        child.standardInput = FileHandle.nullDevice
        try child.run()
        process.withLock { $0 = child }
    }

    /// SIGTERM: floe dev stops its children gracefully and exits; returns its exit status.
    @discardableResult
    func stop() -> Int32? {
        guard let child = process.withLock({ current -> Process? in
            defer { current = nil }
            return current
        }) else { return nil }
        kill(child.processIdentifier, SIGTERM)
        child.waitUntilExit()
        return child.terminationStatus
    }

    /// SIGKILL floe dev and every service cluster.json still lists, for clean-up after a failure.
    func killAll() {
        let services = clusterFile?.services ?? []
        if let child = process.withLock({ current -> Process? in
            defer { current = nil }
            return current
        }) {
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
        }
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
        let deadline = ContinuousClock.now + timeout
        var last = "cluster.json not written yet"
        while ContinuousClock.now < deadline {
            if let file = clusterFile {
                let services = file.services
                let brokers = services.filter { $0.kind == "broker" }
                if brokers.count == brokerCount, services.allSatisfy({ $0.state == "running" && $0.pid != nil }), condition(services) {
                    var notReady: [String] = []
                    for service in services {
                        guard let admin = try? HostPort(parsing: service.admin) else { continue }
                        let status = (try? await AdminClient.get(admin, path: "/readyz", timeout: .milliseconds(500)))?.status
                        if status != 200 { notReady.append("\(service.kind)-\(service.nodeID)") }
                    }
                    if notReady.isEmpty { return services }
                    last = "not ready: \(notReady.joined(separator: ", "))"
                } else {
                    last = services.map { "\($0.kind)-\($0.nodeID) \($0.state)" }.joined(separator: ", ")
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterTestFailure(description: "timed out after \(timeout) waiting for \(what): \(last)\n\(logTail())")
    }

    /// The last lines of floe dev's own output, for failure messages.
    func logTail(lines: Int = 30) -> String {
        guard let text = try? String(contentsOfFile: "\(dataDirectory)/floe-dev.out", encoding: .utf8) else { return "(no floe dev output)" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    private func isFloeService(_ pid: Int32) -> Bool {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe") else { return false }
        return URL(fileURLWithPath: exe).lastPathComponent.hasPrefix("floe-")
    }

    static func floeBinary() -> String? {
        var candidates: [String] = []
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append(URL(fileURLWithPath: executable).deletingLastPathComponent().path)
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(root.appendingPathComponent(".build/debug").path)
        return candidates.map { $0 + "/floe" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A base port whose broker, controller and WAL writer ports (listen and admin) are all free.
    /// The search starts at a random place so concurrent test runs on one machine rarely collide.
    static func freeBasePort(brokers: Int, zones: Int) throws -> Int {
        let brokerPorts: [Int] = (0..<brokers).flatMap { j -> [Int] in [j, 300 + j] }
        let writerPorts: [Int] = (0..<zones).flatMap { z -> [Int] in [118 + z, 218 + z] }
        let offsets = brokerPorts + writerPorts + [98, 198]
        let slots = Array(stride(from: 40_000, to: 64_000, by: 400))
        let start = Int.random(in: 0..<slots.count)
        for k in 0..<slots.count {
            let base = slots[(start + k) % slots.count]
            if offsets.allSatisfy({ portIsFree(base + $0) }) { return base }
        }
        throw ClusterTestFailure(description: "no free port range for floe dev")
    }

    static func portIsFree(_ port: Int) -> Bool {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { return false }
        defer { close(s) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
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

    /// Starts a script without waiting for it.
    static func start(_ script: String, interpreter: String = pathPython, _ arguments: [String]) throws -> RunningScript {
        let outputPath = NSTemporaryDirectory() + "floe-script-\(UUID().uuidString).out"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: outputPath) else { throw ClusterTestFailure(description: "cannot open \(outputPath)") }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: interpreter)
        child.arguments = ["-u", "\(directory)/\(script)"] + arguments
        child.standardOutput = handle
        child.standardError = handle
        child.standardInput = FileHandle.nullDevice
        let exited = AsyncStream<Int32>.makeStream()
        child.terminationHandler = { process in
            exited.continuation.yield(process.terminationStatus)
            exited.continuation.finish()
        }
        try child.run()
        try? handle.close()
        return RunningScript(process: child, exited: exited.stream, outputPath: outputPath)
    }

    /// A script started by ``start(_:interpreter:_:)``.
    final class RunningScript: Sendable {
        let pid: Int32
        let outputPath: String
        private let exited: Mutex<AsyncStream<Int32>?>

        init(process: Process, exited: AsyncStream<Int32>, outputPath: String) {
            self.pid = process.processIdentifier
            self.outputPath = outputPath
            self.exited = Mutex(exited)
        }

        /// SIGKILLs a script nobody will wait for and removes its output file.
        func cancel() {
            kill(pid, SIGKILL)
            try? FileManager.default.removeItem(atPath: outputPath)
        }

        /// Waits for the exit, SIGKILLing the script once `timeout` passes; returns its output.
        func wait(timeout: Duration) async -> Outcome {
            guard let stream = exited.withLock({ current -> AsyncStream<Int32>? in
                defer { current = nil }
                return current
            }) else { return Outcome(status: -1, timedOut: false, output: "(already waited for)") }
            let pid = self.pid
            let result: (Int32, Bool) = await withTaskGroup(of: (Int32, Bool)?.self) { group in
                group.addTask {
                    for await status in stream { return (status, false) }
                    return nil
                }
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    return nil
                }
                let first = await group.next() ?? nil
                if let first {
                    group.cancelAll()
                    return first
                }
                kill(pid, SIGKILL)
                // The exit arrives promptly after SIGKILL; the sleeper already finished.
                while let next = await group.next() {
                    if let next { return (next.0, true) }
                }
                return (-1, true)
            }
            let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "(no output)"
            try? FileManager.default.removeItem(atPath: outputPath)
            return Outcome(status: result.0, timedOut: result.1, output: output)
        }
    }
}
