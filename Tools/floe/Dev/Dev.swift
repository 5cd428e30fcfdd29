import KafkaTransport
import ArgumentParser
import DevCluster
import FloeService
import Foundation
import Logging
import ObjectStorage
import UnixSignals

/// `floe dev`: a whole cluster as child processes on loopback, restarted when they die.
struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local Floe cluster (or inspect one with `floe dev status`).",
        subcommands: [DevUp.self, DevStatus.self],
        defaultSubcommand: DevUp.self
    )
}

/// `floe dev [up]`: start and supervise the cluster until Ctrl-C.
struct DevUp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a local cluster and keep it running until Ctrl-C.",
        discussion: """
            Starts every kind whose executable sits next to `floe` (or in FLOE_BIN_DIR); kinds without one are \
            skipped and listed. Each child logs to DATA_DIR/logs/<kind>-<node id>.log and is restarted with \
            exponential backoff (100 ms doubling to 10 s, reset after 30 s up) when it dies. DATA_DIR/cluster.json \
            always lists what runs where. While DATA_DIR/hold/<kind>-<node id> exists, that service is not restarted \
            when it dies (its state is `held`); removing the file starts it again. Ctrl-C or SIGTERM stops children \
            gracefully (SIGKILL after 15 s); a second Ctrl-C kills them at once.

            Port plan from --base-port B (default 9092), all on 127.0.0.1:
              brokers       listen B+j      (9092…)   admin B+300+j (9392…)   node ids 101…
              controllers   listen B+98+i   (9190…)   admin B+198+i (9290…)   node ids 1…
              WAL writers   listen B+118+z  (9210…)   admin B+218+z (9310…)   node ids 201…, one per zone
              zone routers  listen B+128+z  (9220…)   admin B+228+z (9320…)   node ids 301…, one per zone
              compactor     listen B+138    (9230)    admin B+238   (9330)    node id 401
            """
    )

    @Option(help: "Number of controllers (Raft voters): 1 or 3.")
    var controllers: Int = 1

    @Option(help: "Zone names, comma-separated (a,b,c), or a count (3 means a,b,c).")
    var zones: String = "a"

    @Option(name: .customLong("brokers-per-zone"), help: "Brokers in each zone.")
    var brokersPerZone: Int = 1

    @Option(name: .customLong("data-dir"), help: "Where logs, service data and cluster.json go.")
    var dataDir: String = "./floe-data"

    @Option(name: .customLong("base-port"), help: "First port of the port plan (see above).")
    var basePort: Int = 9092

    @Option(name: .customLong("object-store"), help: "Object store URL for services that use one (default: file://DATA_DIR/objects).")
    var objectStore: String?

    @Option(name: .customLong("broker-arg"), parsing: .unconditionalSingleValue, help: "An extra argument for every broker, repeatable (e.g. --broker-arg --wal-bypass).")
    var brokerArguments: [String] = []

    @Option(name: .customLong("wal-arg"), parsing: .unconditionalSingleValue, help: "An extra argument for every WAL writer, repeatable (e.g. --wal-arg --inline-write-after-idle-ms --wal-arg 0).")
    var walArguments: [String] = []
    @Option(name: .customLong("compactor-arg"), parsing: .unconditionalSingleValue, help: "An extra argument for the compactor, repeatable (e.g. --compactor-arg --interval-ms --compactor-arg 1000).")
    var compactorArguments: [String] = []

    @Option(name: .customLong("log-level"), help: "Log level passed to every service.")
    var logLevel: String = "info"

    @Option(name: .customLong("grace-period"), help: "Seconds children get to exit after SIGTERM before SIGKILL.")
    var gracePeriod: Int = 15

    /// A local cluster on S3 needs its bucket; creating one that exists is harmless.
    static func createBucket(_ url: String, logger: Logger) async throws {
        let configuration = try S3Configuration(url: url, environment: ProcessInfo.processInfo.environment)
        let store = try S3ObjectStore(configuration: configuration, logger: logger)
        defer { Task { try? await store.shutdown() } }
        var lastError: (any Error)?
        for _ in 0..<20 {
            do {
                try await store.createBucket()
                return
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        throw ValidationError("cannot create the bucket of \(url): \(lastError.map { "\($0)" } ?? "unknown error")")
    }

    func run() async throws {
        FloeLogging.bootstrap(level: .info)
        let logger = Logger(label: "floe.dev")
        let dataDirectory = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        var plan: DevClusterPlan
        do {
            plan = try DevClusterPlan(
                controllers: controllers, zones: DevClusterPlan.zoneNames(zones),
                brokersPerZone: brokersPerZone, dataDirectory: dataDirectory, basePort: basePort,
                objectStore: objectStore, logLevel: logLevel
            )
            plan.brokerArguments = brokerArguments
            plan.walArguments = walArguments
            plan.compactorArguments = compactorArguments
        } catch {
            throw ValidationError(error.description)
        }
        let binDirectory = DevClusterPlan.binDirectory()
        let (specs, skipped) = plan.resolve(binDirectory: binDirectory)
        if !skipped.isEmpty {
            say("skipped (no executable in \(binDirectory)): \(skipped.joined(separator: ", "))")
        }
        guard !specs.isEmpty else {
            throw ValidationError("no service executables found in \(binDirectory); build them or set FLOE_BIN_DIR")
        }
        if let previous = try? ClusterFile.read(from: dataDirectory + "/cluster.json") {
            let survivors = previous.survivors(amongExecutables: Set(specs.map(\.executable)))
            guard survivors.isEmpty else {
                let list = survivors.map { "\($0.kind)-\($0.nodeID) pid \($0.pid ?? 0)" }.joined(separator: ", ")
                throw ValidationError("services of an earlier floe dev in \(dataDirectory) are still running (\(list)); stop or kill them first")
            }
        }
        let taken = PortCheck.taken(specs)
        guard taken.isEmpty else {
            let list = taken.map(\.description).joined(separator: ", ")
            throw ValidationError(
                "ports of this cluster are already in use (\(list)); stop whatever holds them (another floe dev?) or choose another --base-port")
        }
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        if plan.objectStore.hasPrefix("file://") {
            try FileManager.default.createDirectory(atPath: String(plan.objectStore.dropFirst("file://".count)), withIntermediateDirectories: true)
        } else if plan.objectStore.hasPrefix("s3://") {
            try await Self.createBucket(plan.objectStore, logger: logger)
            say("bucket of \(plan.objectStore) ready")
        }
        // Trap before any child exists so an early Ctrl-C still stops them in order; SIGHUP (terminal closed) too,
        // since children in their own process group would not get it and would be orphaned.
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup)
        // Every setting a child needs is on its command line; a stray FLOE_* in this shell must not reconfigure it.
        let childEnvironment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("FLOE_") }
        let supervisor = Supervisor(specs: specs, dataDirectory: dataDirectory, environment: childEnvironment, logger: logger)
        try await supervisor.start()

        let announcer = Task {
            await Self.announceWhenReady(specs: specs, plan: plan, clusterFile: supervisor.clusterFilePath)
        }
        let grace = Duration.seconds(gracePeriod)
        // UnixSignals allows one iterator, so one task sees every signal: the first stops, later ones kill.
        let signalHandler = Task {
            var received = 0
            for await signal in signals {
                received += 1
                if received == 1 {
                    announcer.cancel()
                    say("\n\(signal): stopping \(specs.count) services (Ctrl-C again to kill them now)")
                    Task { await supervisor.stop(gracePeriod: grace) }
                } else {
                    say("\(signal) again: killing all services now")
                    await supervisor.killAll()
                }
            }
        }
        await supervisor.waitUntilStopped()
        signalHandler.cancel()
        say("stopped; logs are in \(dataDirectory)/logs")
    }

    /// Waits (bounded) until every service answers /readyz, then prints what runs where.
    static func announceWhenReady(specs: [ServiceSpec], plan: DevClusterPlan, clusterFile: String) async {
        let deadline = ContinuousClock.now + .seconds(60)
        var pending = specs
        while !pending.isEmpty, ContinuousClock.now < deadline, !Task.isCancelled {
            var stillPending: [ServiceSpec] = []
            for spec in pending {
                let ready = (try? await AdminClient.get(spec.admin, path: "/readyz", timeout: .milliseconds(500)))?.status == 200
                if !ready { stillPending.append(spec) }
            }
            pending = stillPending
            if !pending.isEmpty { try? await Task.sleep(for: .milliseconds(250)) }
        }
        if Task.isCancelled { return }
        var lines = ["", "Floe dev cluster (data in \(plan.dataDirectory)):"]
        for spec in specs {
            let state = pending.contains(spec) ? "NOT READY" : "ready"
            lines.append("  \(spec.name.padding(toLength: 18, withPad: " ", startingAt: 0)) zone \(spec.zone.padding(toLength: 6, withPad: " ", startingAt: 0)) listen \(spec.listen.description.padding(toLength: 16, withPad: " ", startingAt: 0)) admin \(spec.admin)  \(state)")
        }
        let brokers = specs.filter { $0.kind == "broker" }.map(\.listen.description)
        lines.append(brokers.isEmpty
            ? "No brokers yet: there is nothing for Kafka clients to connect to."
            : "Connect Kafka clients to: \(brokers.joined(separator: ","))   (e.g. kcat -b \(brokers[0]) -L)")
        lines.append("Services, pids and ports: \(clusterFile)   (`floe dev status` probes them)")
        lines.append("Ctrl-C stops the cluster.")
        say(lines.joined(separator: "\n"))
    }
}

/// `floe dev status`: one line per service of a running dev cluster, probed over its admin port.
struct DevStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each service of a local cluster: pid, liveness, readiness and role."
    )

    @Option(name: .customLong("data-dir"), help: "The data directory `floe dev` was started with.")
    var dataDir: String = "./floe-data"

    func run() async throws {
        let path = URL(fileURLWithPath: dataDir).standardizedFileURL.path + "/cluster.json"
        let file: ClusterFile
        do {
            file = try ClusterFile.read(from: path)
        } catch {
            throw ValidationError("cannot read \(path): \(error.localizedDescription) (is `floe dev` running with this --data-dir?)")
        }
        say("bootstrap: \(file.bootstrap.isEmpty ? "(no brokers)" : file.bootstrap)")
        let rows = await withTaskGroup(of: (Int, [String]).self) { group in
            for (index, service) in file.services.enumerated() {
                group.addTask { (index, await Self.probe(service)) }
            }
            var rows: [(Int, [String])] = []
            for await row in group { rows.append(row) }
            return rows.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let header = ["KIND", "NODE", "ZONE", "PID", "LISTEN", "ADMIN", "READY", "STATUS"]
        say(Self.table([header] + rows))
    }

    static func probe(_ service: ClusterFile.Service) async -> [String] {
        let pid: String
        if let value = service.pid {
            pid = "\(value)" + (ChildProcess.isAlive(value) ? "" : " (dead)")
        } else {
            pid = "- (\(service.state))"
        }
        var ready = "-"
        var status = "-"
        if let admin = try? KafkaEndpoint(parsing: service.admin), service.pid != nil {
            if let readyz = try? await AdminClient.get(admin, path: "/readyz", timeout: .milliseconds(500)) {
                ready = readyz.status == 200 ? "yes" : "no (\(readyz.status))"
            } else {
                ready = "unreachable"
            }
            if let response = try? await AdminClient.get(admin, path: "/status", timeout: .milliseconds(500)), response.status == 200,
                let json = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any]
            {
                let skip: Set = ["node_id", "kind", "zone"]
                status = json.keys.sorted().filter { !skip.contains($0) }.map { "\($0)=\(json[$0].map { "\($0)" } ?? "")" }.joined(separator: " ")
            }
        }
        return [service.kind, "\(service.nodeID)", service.zone, pid, service.listen, service.admin, ready, status]
    }

    static func table(_ rows: [[String]]) -> String {
        let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }.joined(separator: "\n")
    }
}

/// Prints a line straight to stdout: `print` is block-buffered when stdout is a file or pipe, and the summary must show up at once.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
