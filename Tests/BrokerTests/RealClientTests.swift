import Foundation
import TestKit
import Testing

/// One `floe dev` for every test of a suite: two zones with a broker and a WAL writer each, so a
/// topic's partitions are led by both brokers. Started before the first test, stopped after the
/// last, reachable from the tests through ``current``.
struct SharedDevCluster: SuiteTrait, TestScoping {
    @TaskLocal static var current: DevClusterProcess?

    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let cluster = try DevClusterProcess.make(zones: ["a", "b"], brokersPerZone: 1, name: "clients")
        defer { cluster.tearDown() }
        do {
            try cluster.start()
            try await cluster.waitUntilReady("floe dev with two zones")
        } catch {
            throw ClusterTestFailure(description: "\(error) \(cluster.keepForInspection())")
        }
        try await Self.$current.withValue(cluster) { try await function() }
    }
}

/// Unmodified Kafka clients doing what applications do against a `floe dev` cluster: each test runs
/// one client's script (Tests/Compatibility/clients) and passes when it exits 0. A client that is
/// not installed fails its test: Tools/install-deps.sh installs all of them.
@Suite(.serialized, SharedDevCluster()) struct RealClientTests {
    func runScript(_ script: String, interpreter: String = ClientScripts.pathPython, prefix: String) async throws {
        let cluster = try #require(SharedDevCluster.current, "the suite's floe dev is not running")
        // A unique prefix per run keeps topics of a re-run (or of another client) apart.
        let unique = "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
        let outcome = try await ClientScripts.run(
            script, interpreter: interpreter, ["--bootstrap", cluster.bootstrap, "--prefix", unique, "--deadline", "150"],
            timeout: .seconds(180))
        let passed = outcome.status == 0 && !outcome.timedOut
        #expect(passed, "\(script) under \(interpreter): \(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
    }

    @Test(.timeLimit(.minutes(4))) func confluentKafkaFromPip() async throws {
        try await runScript("confluent_client.py", prefix: "confluent-pip")
    }

    @Test(.timeLimit(.minutes(4))) func confluentKafkaFromDebian() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: ClientScripts.debianPython), "\(ClientScripts.debianPython) is missing")
        try await runScript("confluent_client.py", interpreter: ClientScripts.debianPython, prefix: "confluent-debian")
    }

    @Test(.timeLimit(.minutes(4))) func kafkaPython() async throws {
        try await runScript("kafka_python_client.py", prefix: "kafka-python")
    }

    @Test(.timeLimit(.minutes(4))) func aiokafka() async throws {
        try await runScript("aiokafka_client.py", prefix: "aiokafka")
    }

    @Test(.timeLimit(.minutes(4))) func kcat() async throws {
        try await runScript("kcat_client.py", prefix: "kcat")
    }
}

/// Every client writes its topics, the whole cluster is stopped (SIGTERM) and started again on its
/// data directory, and every client reads them back: the brokers come back with empty caches, so
/// the reads are served from what the WAL writer and object storage kept.
@Suite(.serialized) struct ClientsAcrossRestartTests {
    struct Client: Sendable, CustomStringConvertible {
        var script: String
        var interpreter: String
        var prefix: String
        var description: String { "\(script) under \(interpreter)" }
    }

    static let clients = [
        Client(script: "confluent_client.py", interpreter: ClientScripts.pathPython, prefix: "confluent-pip"),
        Client(script: "confluent_client.py", interpreter: ClientScripts.debianPython, prefix: "confluent-debian"),
        Client(script: "kafka_python_client.py", interpreter: ClientScripts.pathPython, prefix: "kafka-python"),
        Client(script: "aiokafka_client.py", interpreter: ClientScripts.pathPython, prefix: "aiokafka"),
        Client(script: "kcat_client.py", interpreter: ClientScripts.pathPython, prefix: "kcat"),
    ]

    @Test(.timeLimit(.minutes(8))) func everyClientReadsBackWhatItWroteAfterAClusterRestart() async throws {
        let cluster = try DevClusterProcess.make(brokersPerZone: 1, name: "clients-restart")
        defer { cluster.tearDown() }
        try cluster.start()
        try await cluster.waitUntilReady("floe dev with one broker")
        let run = UInt32.random(in: 0...UInt32.max)
        func phase(_ name: String, _ client: Client) async throws -> ClientScripts.Outcome {
            try await ClientScripts.run(
                client.script, interpreter: client.interpreter,
                ["--bootstrap", cluster.bootstrap, "--prefix", "\(client.prefix)-\(run)", "--phase", name, "--deadline", "100"],
                timeout: .seconds(120))
        }
        var written: [Client] = []
        for client in Self.clients {
            let outcome = try await phase("write", client)
            let passed = outcome.status == 0 && !outcome.timedOut
            #expect(passed, "write phase of \(client): \(outcome)\n\(passed ? "" : cluster.keepForInspection())")
            if outcome.status == 0 { written.append(client) }
        }
        #expect(cluster.stop() == 0, "floe dev exit status after SIGTERM\n\(cluster.logTail())")
        try cluster.start()
        try await cluster.waitUntilReady("floe dev restarted on its data directory")
        for client in written {
            let outcome = try await phase("read", client)
            let passed = outcome.status == 0 && !outcome.timedOut
            #expect(passed, "read phase of \(client) after the restart: \(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
        }
    }
}

/// The harness itself: a script that finds a mismatch, or hangs, must come back as a failure.
@Suite struct ClientScriptHarnessTests {
    static func closedPort() throws -> Int {
        try #require((47_000..<48_000).first(where: portIsFree), "a loopback port nothing listens on")
    }

    @Test(.timeLimit(.minutes(1))) func scriptAgainstNothingFailsWithAMessage() async throws {
        let port = try Self.closedPort()
        let outcome = try await ClientScripts.run("kcat_client.py", ["--bootstrap", "127.0.0.1:\(port)", "--prefix", "nothing"], timeout: .seconds(50))
        #expect(outcome.status != 0 && !outcome.timedOut, "\(outcome)")
        #expect(outcome.output.contains("FAIL"), "\(outcome)")
    }

    @Test(.timeLimit(.minutes(1))) func scriptOverItsDeadlineStopsWithItsStacks() async throws {
        let port = try Self.closedPort()
        // confluent-kafka waits up to 15 s for CreateTopics; the 3 s deadline must end it first.
        let started = ContinuousClock.now
        let outcome = try await ClientScripts.run(
            "confluent_client.py", ["--bootstrap", "127.0.0.1:\(port)", "--prefix", "hung", "--deadline", "3"], timeout: .seconds(50))
        #expect(outcome.status != 0 && !outcome.timedOut, "\(outcome)")
        #expect(outcome.output.contains("Timeout"), "\(outcome)")
        #expect(ContinuousClock.now - started < .seconds(12))
    }
}
