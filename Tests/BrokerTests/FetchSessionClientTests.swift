import Foundation
import TestKit
import Testing

/// kafka-python's incremental fetch sessions against a one-broker `floe dev`, checked by the
/// broker's fetch-session metrics (Tests/Compatibility/clients/fetch_sessions.py).
@Suite(.serialized) struct FetchSessionClientTests {
    func runScenario(_ scenario: String, brokerArguments: [String] = []) async throws {
        let cluster = try DevClusterProcess.make(
            brokersPerZone: 1, name: "fetch-sessions", extraArguments: brokerArguments.map { "--broker-arg=\($0)" })
        defer { cluster.tearDown() }
        try cluster.start()
        try await cluster.waitUntilReady("floe dev with one broker")
        let broker = try #require(cluster.clusterFile?.services.first { $0.kind == "broker" }, "cluster.json lists no broker")
        let outcome = try await ClientScripts.run(
            "fetch_sessions.py",
            [
                "--bootstrap", cluster.bootstrap, "--admin", broker.admin, "--scenario", scenario,
                "--prefix", "sessions-\(UInt32.random(in: 0...UInt32.max))", "--deadline", "150",
            ],
            timeout: .seconds(180))
        let passed = outcome.status == 0 && !outcome.timedOut
        #expect(passed, "fetch_sessions.py --scenario \(scenario): \(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
    }

    @Test(.timeLimit(.minutes(4))) func aSessionOf24PartitionsNamesOnlyWhatChanged() async throws {
        try await runScenario("partitions")
    }

    @Test(.timeLimit(.minutes(4))) func twoConsumersEvictingEachOthersSessionsReadEverything() async throws {
        try await runScenario(
            "evicting", brokerArguments: ["--max-incremental-fetch-session-cache-slots=1", "--min-incremental-fetch-session-eviction-ms=0"])
    }
}
