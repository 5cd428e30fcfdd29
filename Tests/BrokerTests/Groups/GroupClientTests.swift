import DevCluster
import Foundation
import KafkaTransport
import Testing

/// Real Kafka clients' consumer groups against `floe dev` (one controller, two brokers): the Python
/// scripts in Tests/Compatibility/groups do what applications do and print one JSON line per check;
/// a missing client package fails them.
@Suite(.serialized) struct GroupClientTests {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The outcome of a finished child process.
    struct Run {
        var status: Int32
        var output: String
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let scripts = repositoryRoot.appendingPathComponent("Tests/Compatibility/groups").path

    /// Runs `arguments` (through /usr/bin/env) to completion, killing it after `timeout`; stdin from `input`.
    static func run(_ arguments: [String], input: String? = nil, timeout: Duration = .seconds(180), log: String) async throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? handle.close() }
        process.standardOutput = handle
        process.standardError = handle
        if let input {
            let inputPath = log + ".in"
            FileManager.default.createFile(atPath: inputPath, contents: Data(input.utf8))
            process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: inputPath))
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
            let pid = process.processIdentifier
            Task {
                try? await Task.sleep(for: timeout)
                if process.isRunning { kill(pid, SIGKILL) }
            }
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return Run(status: status, output: output)
    }

    /// Expects a script run to have passed every check.
    static func expectPassed(_ run: Run, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let passed = run.status == 0 && run.output.contains("{\"check\": \"done\", \"ok\": true}")
        #expect(passed, "\(what) failed (exit \(run.status)):\n\(run.output.suffix(3000))", sourceLocation: sourceLocation)
    }

    @Test(.timeLimit(.minutes(12))) func realClientsFormGroupsAndKeepOffsets() async throws {
        let floe = try #require(DevClusterProcess.floeBinary(), "floe not built next to the tests")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("floe-groups-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let base = try DevClusterProcess.freeBasePort(brokers: 2, zones: 1)
        let bootstrap = "127.0.0.1:\(base),127.0.0.1:\(base + 1)"
        let dev = try ChildProcess.spawn(
            executable: floe,
            arguments: ["dev", "up", "--data-dir", directory + "/data", "--base-port", "\(base)", "--brokers-per-zone", "2", "--log-level", "warning", "--grace-period", "5"],
            environment: ProcessInfo.processInfo.environment, logPath: directory + "/floe-dev.log")
        defer {
            ChildProcess.signal(dev, SIGINT)
            for _ in 0..<200 where ChildProcess.isAlive(dev) { usleep(50_000) }
            ChildProcess.signal(dev, SIGKILL)
        }

        // Both brokers registered and answering Metadata.
        var ready = false
        for attempt in 0..<60 {
            let probe = try await Self.run(["kcat", "-b", bootstrap, "-L", "-m", "3"], timeout: .seconds(10), log: directory + "/probe-\(attempt).log")
            if probe.status == 0, probe.output.contains(" 2 brokers:") {
                ready = true
                break
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        try #require(ready, "floe dev did not come up")

        let confluent = Self.scripts + "/confluent_group.py"
        let python = Self.scripts + "/python_groups.py"
        Self.expectPassed(try await Self.run(["python3", confluent, bootstrap, "coverage", "g-coverage"], log: directory + "/coverage.log"), "confluent-kafka range group")
        Self.expectPassed(
            try await Self.run(["python3", confluent, bootstrap, "cooperative", "g-cooperative"], log: directory + "/cooperative.log"),
            "confluent-kafka cooperative-sticky group")
        Self.expectPassed(try await Self.run(["python3", confluent, bootstrap, "commit", "g-commit"], log: directory + "/commit.log"), "confluent-kafka commit and resume")
        Self.expectPassed(
            try await Self.run(["python3", confluent, bootstrap, "static", "g-static"], log: directory + "/static.log"), "confluent-kafka static member rejoin")
        // Debian's python3-confluent-kafka 1.7 on librdkafka 2.0.2, importable only from Debian's own interpreter.
        for scenario in ["coverage", "cooperative", "commit", "static"] {
            Self.expectPassed(
                try await Self.run(["/usr/bin/python3", confluent, bootstrap, scenario, "g-debian-\(scenario)"], log: directory + "/debian-\(scenario).log"),
                "Debian confluent-kafka \(scenario)")
        }
        Self.expectPassed(try await Self.run(["python3", python, bootstrap, "admin", "g-admin"], log: directory + "/admin.log"), "kafka-python group admin APIs")
        Self.expectPassed(try await Self.run(["python3", python, bootstrap, "kafka-python", "g-kafka-python"], log: directory + "/kafka-python.log"), "kafka-python group")
        Self.expectPassed(try await Self.run(["python3", python, bootstrap, "aiokafka", "g-aiokafka"], log: directory + "/aiokafka.log"), "aiokafka group")

        // The Java client's versions (flexible, batched), by hand.
        try await GroupWireChecks(brokers: [KafkaEndpoint(host: "127.0.0.1", port: base), KafkaEndpoint(host: "127.0.0.1", port: base + 1)])
            .run(topic: "g-coverage")

        // kcat's balanced consumer (-G): a group reads everything once, and after it committed, only what came later.
        let produced = try await Self.run(
            ["kcat", "-b", bootstrap, "-P", "-t", "g-kcat"], input: (1...25).map { "m\($0)" }.joined(separator: "\n") + "\n", log: directory + "/kcat-p1.log")
        #expect(produced.status == 0, "kcat -P: \(produced.output)")
        let consume = ["kcat", "-b", bootstrap, "-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-e", "-q", "g-kcat"]
        let first = try await Self.run(consume, timeout: .seconds(90), log: directory + "/kcat-c1.log")
        #expect(first.status == 0)
        #expect(Set(first.output.split(separator: "\n").filter { $0.hasPrefix("m") }) == Set((1...25).map { "m\($0)" }))
        let more = try await Self.run(["kcat", "-b", bootstrap, "-P", "-t", "g-kcat"], input: "late1\nlate2\n", log: directory + "/kcat-p2.log")
        #expect(more.status == 0)
        let second = try await Self.run(consume, timeout: .seconds(90), log: directory + "/kcat-c2.log")
        #expect(second.status == 0)
        #expect(second.output.split(separator: "\n").filter { $0.hasPrefix("m") || $0.hasPrefix("late") }.sorted() == ["late1", "late2"])

        // The coordinator of a live group stops: the next one rebuilds the group from its records.
        Self.expectPassed(
            try await Self.run(["python3", confluent, bootstrap, "failover", "g-coverage", directory + "/data"], log: directory + "/failover.log"),
            "group rebuilt after coordinator fail-over")

        // Commits survive the coordinators: restart both brokers, then a new consumer reads them back.
        Self.expectPassed(
            try await Self.run(["python3", confluent, bootstrap, "simple-commit", "g-coverage", "simple-group"], log: directory + "/simple-commit.log"),
            "simple (assign-mode) commit")
        let clusterPath = directory + "/data/cluster.json"
        for node: Int32 in [101, 102] {
            let before = try #require(try ClusterFile.read(from: clusterPath).services.first { $0.nodeID == node }?.pid)
            #expect(ChildProcess.signal(before, SIGTERM))
            var restarted = false
            for _ in 0..<300 {
                if let service = try? ClusterFile.read(from: clusterPath).services.first(where: { $0.nodeID == node }),
                   let pid = service.pid, pid != before, service.state == "running" {
                    restarted = true
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(restarted, "broker \(node) was not restarted")
        }
        Self.expectPassed(
            try await Self.run(["python3", confluent, bootstrap, "check-committed", "g-coverage", "simple-group"], log: directory + "/check-committed.log"),
            "committed offsets after both brokers restarted")
    }
}
