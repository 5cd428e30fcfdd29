import ArgumentParser
import ClusterMetadata
import ControllerClient
import Foundation
import KafkaTransport
import Logging

/// `floe bench controller`: commit latency and throughput of the controller quorum, and failover time.
struct BenchController: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Measure controller commit latency (p50/p99), commits/s, and leader SIGKILL → writable again."
    )

    @Option(help: "Target running controllers (HOST:PORT,…) instead of starting three; failover is then skipped.")
    var controllers: String?

    @Option(help: "Sequential writes for the latency measurement.")
    var writes = 2000

    @Option(help: "Concurrent writers for the throughput measurement.")
    var concurrency = 32

    @Option(help: "Seconds of the throughput measurement.")
    var seconds = 3.0

    @Option(help: "Failover rounds (leader SIGKILL, wait for a write to succeed, restart the killed voter).")
    var failovers = 3

    @Option(help: "Path of floe-controller (default: beside this executable).")
    var controllerBinary: String?

    func validate() throws {
        guard (1...1_000_000).contains(writes) else { throw ValidationError("--writes must be in 1...1000000") }
        guard (1...1024).contains(concurrency) else { throw ValidationError("--concurrency must be in 1...1024") }
        guard seconds > 0, seconds <= 120 else { throw ValidationError("--seconds must be in (0, 120]") }
        guard (0...20).contains(failovers) else { throw ValidationError("--failovers must be in 0...20") }
    }

    func run() async throws {
        var logger = Logger(label: "floe-bench-controller")
        logger.logLevel = .critical
        var cluster: LocalControllers?
        let endpoints: [KafkaEndpoint]
        if let controllers {
            endpoints = try parseEndpoints(controllers)
        } else {
            let binary = controllerBinary ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("floe-controller").path
            let local = try LocalControllers(binary: binary)
            try local.startAll()
            cluster = local
            endpoints = local.endpoints
        }
        defer { cluster?.killAll() }

        let client = ControllerClient(endpoints: endpoints, logger: logger, retryDeadline: .seconds(30))
        // Warm up: elect a leader and open the connection.
        _ = try await client.write(.expirePrepared(now: 0))

        print("floe bench controller")
        print("  voters: \(endpoints.map(\.description).joined(separator: ",")) (\(cluster == nil ? "targeted" : "started here, default timeouts"))")
        print("  command: expirePrepared (a no-op on an empty object table), \(writes) sequential writes, \(concurrency) concurrent writers for \(seconds) s")
        print("  cores: \(ProcessInfo.processInfo.activeProcessorCount)")
        print("")

        let clock = ContinuousClock()
        var latencies: [Duration] = []
        latencies.reserveCapacity(writes)
        for _ in 0..<writes {
            let start = clock.now
            _ = try await client.write(.expirePrepared(now: 0))
            latencies.append(start.duration(to: clock.now))
        }
        latencies.sort()
        print("  sequential commit latency: p50 \(ms(percentile(latencies, 0.50))) ms, p99 \(ms(percentile(latencies, 0.99))) ms, max \(ms(latencies.last ?? .zero)) ms")

        // Propagation to a metadata follower reading from a follower controller.
        var followerIndex = 0
        for (k, endpoint) in endpoints.enumerated() {
            if let status = try? await client.describe(endpoint), status.role != "leader" { followerIndex = k }
        }
        let image = MetadataFollower(client: ControllerClient(endpoints: [endpoints[followerIndex]], logger: logger), logger: logger)
        let following = Task { await image.run() }
        var propagation: [Duration] = []
        let rounds = min(writes, 500)
        for _ in 0..<rounds {
            let start = clock.now
            let (_, index) = try await client.writeWithIndex(.expirePrepared(now: 0))
            guard await image.waitForVersion(index, timeout: .seconds(5)) else {
                print("  follower did not reach version \(index) within 5 s")
                break
            }
            propagation.append(start.duration(to: clock.now))
        }
        following.cancel()
        propagation.sort()
        print("  write start → follower image (via controller \(followerIndex + 1)): p50 \(ms(percentile(propagation, 0.50))) ms, p99 \(ms(percentile(propagation, 0.99))) ms over \(propagation.count) writes")

        let deadline = clock.now.advanced(by: .milliseconds(Int64(seconds * 1000)))
        let started = clock.now
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var count = 0
                    while clock.now < deadline {
                        _ = try await client.write(.expirePrepared(now: 0))
                        count += 1
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = started.duration(to: clock.now)
        print("  throughput: \(total) commits in \(ms(elapsed)) ms = \(Int(Double(total) / inSeconds(elapsed))) commits/s")

        guard let cluster, failovers > 0 else { return }
        var times: [Duration] = []
        for round in 0..<failovers {
            guard let leader = try await findLeader(client: client, endpoints: endpoints) else {
                print("  failover round \(round): no leader found")
                continue
            }
            let killedAt = clock.now
            cluster.kill(leader)
            // Any write succeeding (at whichever voter is leader next) ends the measurement.
            _ = try await client.write(.expirePrepared(now: 0))
            let took = killedAt.duration(to: clock.now)
            times.append(took)
            print("  failover round \(round): leader \(leader + 1) SIGKILLed, writable again after \(ms(took)) ms")
            try cluster.start(leader)
            // Let the restarted voter catch up before the next round.
            let target = endpoints[leader]
            var caughtUp = false
            for _ in 0..<200 where !caughtUp {
                if let status = try? await client.describe(target), status.leaderId >= 0, status.appliedIndex > 0 { caughtUp = true } else {
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
        }
        if !times.isEmpty {
            times.sort()
            print("  failover (leader SIGKILL → write accepted): median \(ms(percentile(times, 0.5))) ms, max \(ms(times.last ?? .zero)) ms over \(times.count) rounds")
        }
    }

    private func findLeader(client: ControllerClient, endpoints: [KafkaEndpoint]) async throws -> Int? {
        for (k, endpoint) in endpoints.enumerated() {
            if let status = try? await client.describe(endpoint), status.role == "leader" { return k }
        }
        return nil
    }
}

private func ms(_ d: Duration) -> String {
    String(format: "%.3f", inSeconds(d) * 1000)
}

/// Three `floe-controller` processes on free loopback ports with a temporary data directory.
final class LocalControllers: @unchecked Sendable {
    let binary: String
    let directory: String
    let ports: [Int]
    private var processes: [Process?] = [nil, nil, nil]

    init(binary: String) throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationError("no floe-controller at \(binary); build it or pass --controller-binary")
        }
        self.binary = binary
        directory = NSTemporaryDirectory() + "floe-bench-controller-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var ports: [Int] = []
        for _ in 0..<3 { ports.append(try Self.freePort()) }
        self.ports = ports
    }

    var endpoints: [KafkaEndpoint] { ports.map { KafkaEndpoint(host: "127.0.0.1", port: $0) } }

    func startAll() throws {
        for k in 0..<3 { try start(k) }
    }

    func start(_ k: Int) throws {
        let voters = ports.enumerated().map { "\($0.offset + 1)@127.0.0.1:\($0.element)" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--node-id", "\(k + 1)", "--listen", "127.0.0.1:\(ports[k])", "--voters", voters,
            "--data-dir", "\(directory)/c\(k + 1)", "--log-level", "warning", "--admin", "127.0.0.1:0",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes[k] = process
    }

    func kill(_ k: Int) {
        guard let process = processes[k] else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        processes[k] = nil
    }

    func killAll() {
        for k in 0..<3 { kill(k) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func freePort() throws -> Int {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, length) } }
        guard bound == 0 else { throw ValidationError("cannot bind a loopback port") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
