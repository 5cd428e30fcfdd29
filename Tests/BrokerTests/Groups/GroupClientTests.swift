import DevCluster
import Foundation
import KafkaTransport
import TestKit
import Testing

/// Real Kafka clients' consumer groups against `floe dev` (one controller, two brokers): the Python
/// scripts in Tests/Compatibility/groups do what applications do and print one JSON line per check;
/// a missing client package fails them.
@Suite(.serialized) struct GroupClientTests {
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
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        var inputPath: String?
        if let input {
            inputPath = log + ".in"
            _ = FileManager.default.createFile(atPath: log + ".in", contents: Data(input.utf8))
        }
        let process = try TestProcess("/usr/bin/env", arguments, logPath: log, inputPath: inputPath)
        let status = await process.wait(timeout: timeout).status
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
        let directory = try temporaryDirectory("groups")
        defer { removeDirectory(directory) }
        let base = try DevClusterProcess.freeBasePort(brokers: 2, zones: 1)
        let bootstrap = "127.0.0.1:\(base),127.0.0.1:\(base + 1)"
        let dev = try TestProcess(
            floe,
            ["dev", "up", "--data-dir", directory + "/data", "--base-port", "\(base)", "--brokers-per-zone", "2", "--log-level", "warning", "--grace-period", "5"],
            logPath: directory + "/floe-dev.log")
        defer { dev.stop(SIGINT, within: .seconds(10)) }

        // Both brokers registered and answering Metadata; another process, so ask until it does.
        var attempt = 0
        let ready = try await waitUntil(timeout: .seconds(120), every: .milliseconds(500)) {
            attempt += 1
            let probe = try await Self.run(["kcat", "-b", bootstrap, "-L", "-m", "3"], timeout: .seconds(10), log: directory + "/probe-\(attempt).log")
            return probe.status == 0 && probe.output.contains(" 2 brokers:")
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
            // floe dev records the restart in cluster.json, another process's file: poll it.
            let restarted = await waitUntil(timeout: .seconds(30), every: .milliseconds(100)) {
                guard let service = try? ClusterFile.read(from: clusterPath).services.first(where: { $0.nodeID == node }) else { return false }
                return service.pid != nil && service.pid != before && service.state == "running"
            }
            #expect(restarted, "broker \(node) was not restarted")
        }
        Self.expectPassed(
            try await Self.run(["python3", confluent, bootstrap, "check-committed", "g-coverage", "simple-group"], log: directory + "/check-committed.log"),
            "committed offsets after both brokers restarted")
    }
}
