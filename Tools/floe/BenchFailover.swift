import ArgumentParser
import ControllerClient
import DevCluster
import Foundation
import KafkaProtocol
import KafkaTransport
import Logging

/// `floe bench failover`: how long a partition is not writable when its leadership moves
/// (AlterPartitionReassignments) and when its leader broker is SIGKILLed or falls silent (SIGSTOP).
struct BenchFailover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Time partition moves and leader-broker kills until the partition is writable again.",
        discussion: """
            Needs at least two brokers. Moves: the partition's leadership is moved to another broker and
            the time from the request to the first acknowledged produce on the new leader is measured.
            Kills (with --cluster-file, e.g. a `floe dev` cluster.json): the leader's process gets
            SIGKILL and the time to the first acknowledged produce (at whichever broker then leads) is
            measured. With --kill-mode restart the supervisor restarts the killed broker at once (it may lead
            again); with --kill-mode stay-down the broker is held down (floe dev's hold file, DATA_DIR/hold/) until
            the partition is writable through another broker, so the time includes the controller noticing the
            death; the broker is then released and the next kill waits for it to be back. With --kill-mode freeze
            the leader gets SIGSTOP instead: a silent broker whose connections stay open (a hung machine, a
            network partition), noticed only through its missed heartbeats; once the partition is writable
            elsewhere the frozen process is killed and the supervisor restarts it.
            """
    )

    @Option(help: "HOST:PORT of any broker (or a comma-separated list; the first is used).") var bootstrap = "127.0.0.1:9092"
    @Option(help: "Leadership moves to time.") var moves = 10
    @Option(help: "Leader kills to time (needs --cluster-file).") var kills = 0
    @Option(help: "cluster.json listing the brokers' pids (floe dev writes one).") var clusterFile: String?
    @Option(name: .customLong("kill-mode"), help: "restart (the default: the supervisor restarts the killed broker at once), stay-down (it is held down until the partition is writable elsewhere) or freeze (SIGSTOP: silent until the partition is writable elsewhere, then killed).")
    var killMode: KillMode?
    @Flag(name: .customLong("no-restart"), help: "The same as --kill-mode stay-down: the killed broker is not restarted until the partition is writable elsewhere.")
    var noRestart = false

    /// The kill mode in effect (`--no-restart` wins).
    private var mode: KillMode { noRestart ? .stayDown : killMode ?? .restart }

    enum KillMode: String, ExpressibleByArgument, CaseIterable {
        case restart
        case stayDown = "stay-down"
        case freeze
    }

    func validate() throws {
        guard (0...1000).contains(moves), (0...100).contains(kills) else { throw ValidationError("--moves in [0, 1000], --kills in [0, 100]") }
        if kills > 0, clusterFile == nil { throw ValidationError("--kills needs --cluster-file") }
        if noRestart, let killMode, killMode != .stayDown { throw ValidationError("--no-restart contradicts --kill-mode \(killMode.rawValue)") }
    }

    func run() async throws {
        var quiet = Logger(label: "floe-bench-failover")
        quiet.logLevel = .critical
        let wire = KafkaWire(clientId: "floe-bench-failover", logger: quiet)
        let endpoint = try KafkaWire.bootstrapEndpoint(bootstrap)
        let topic = "bench-failover-\(UInt32.random(in: 0...UInt32.max))"
        try await wire.createTopic(endpoint, name: topic, partitions: 1)
        try await wire.produceUntilAccepted(endpoint, topic: topic, partition: 0, deadline: .seconds(30))
        print("floe bench failover")
        print("  bootstrap \(bootstrap), topic \(topic), moves \(moves), kills \(kills), kill mode \(mode.rawValue)")

        var moveTimes: [Duration] = []
        for _ in 0..<moves {
            let metadata = try await wire.metadata(endpoint, topics: [topic])
            let leader = metadata.topics.first?.partitions.first?.leaderId ?? -1
            guard let target = metadata.brokers.map(\.nodeId).sorted().first(where: { $0 != leader }) else {
                throw ValidationError("moves need at least two brokers")
            }
            moveTimes.append(try await Admin.Reassign.move(wire: wire, bootstrap: endpoint, topic: topic, partition: 0, to: target, probe: true))
        }
        if !moveTimes.isEmpty { report("partition move → writable", moveTimes.sorted()) }

        var killTimes: [Duration] = []
        for _ in 0..<kills {
            guard let clusterFile else { break }
            let leaders = try await wire.leaders(endpoint, topic: topic)
            guard let leader = leaders[0]?.id else { throw KafkaWire.Failure(description: "no leader") }
            let cluster = try ClusterFile.read(from: clusterFile)
            guard let victim = cluster.services.first(where: { $0.kind == "broker" && $0.nodeID == leader }), let pid = victim.pid else {
                throw KafkaWire.Failure(description: "broker \(leader) not in \(clusterFile)")
            }
            // Bootstrap through a broker that survives.
            let survivor = cluster.services.first { $0.kind == "broker" && $0.nodeID != leader }.map { try? parseEndpoint($0.listen) } ?? nil
            let hold = Supervisor.holdPath(
                dataDirectory: URL(fileURLWithPath: clusterFile).deletingLastPathComponent().path, name: "broker-\(leader)")
            if mode == .stayDown {
                try FileManager.default.createDirectory(
                    atPath: URL(fileURLWithPath: hold).deletingLastPathComponent().path, withIntermediateDirectories: true)
                guard FileManager.default.createFile(atPath: hold, contents: nil) else {
                    throw KafkaWire.Failure(description: "cannot create \(hold)")
                }
            }
            let clock = ContinuousClock()
            let start = clock.now
            kill(pid_t(pid), mode == .freeze ? SIGSTOP : SIGKILL)
            do {
                // Writable at a broker other than the dead (or silent) one.
                try await wire.produceUntilAccepted(
                    survivor ?? endpoint, topic: topic, partition: 0, notLeader: mode == .restart ? nil : leader, deadline: .seconds(60))
            } catch {
                try? FileManager.default.removeItem(atPath: hold)
                if mode == .freeze { kill(pid_t(pid), SIGKILL) }
                throw error
            }
            killTimes.append(clock.now - start)
            // A stopped process takes SIGKILL (the kernel ends it without running it); the supervisor restarts it.
            if mode == .freeze { kill(pid_t(pid), SIGKILL) }
            if mode == .stayDown {
                let state = (try? ClusterFile.read(from: clusterFile))?.services.first { $0.kind == "broker" && $0.nodeID == leader }?.state
                if state != "held" { print("  warning: broker \(leader) is \(state ?? "unknown"), not held, after the measurement") }
                try FileManager.default.removeItem(atPath: hold)
            }
            // Let the supervisor bring the victim back before the next round.
            try await waitForBroker(wire, survivor ?? endpoint, id: leader, deadline: .seconds(60))
        }
        if !killTimes.isEmpty {
            let what = switch mode {
            case .restart: "leader SIGKILL, broker restarted → writable"
            case .stayDown: "leader SIGKILL, broker kept down → writable"
            case .freeze: "leader SIGSTOP (silent) → writable elsewhere"
            }
            report(what, killTimes.sorted())
        }
        await wire.close()
    }

    private func report(_ what: String, _ sorted: [Duration]) {
        func ms(_ d: Duration) -> String { String(format: "%.1f", inSeconds(d) * 1000) }
        print("  \(what): min \(ms(sorted[0])) ms, p50 \(ms(percentile(sorted, 0.5))) ms, max \(ms(sorted[sorted.count - 1])) ms (\(sorted.count) runs)")
    }

    private func waitForBroker(_ wire: KafkaWire, _ endpoint: KafkaEndpoint, id: Int32, deadline: Duration) async throws {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        while clock.now < end {
            if let metadata = try? await wire.metadata(endpoint, topics: []), metadata.brokers.contains(where: { $0.nodeId == id }) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw KafkaWire.Failure(description: "broker \(id) did not come back within \(deadline)")
    }
}
