import Foundation
import TestKit
import Testing

/// A consumer group under churn with real clients (Tests/Compatibility/groups/group_churn.py, on
/// librdkafka through confluent-kafka) against `floe dev` with two brokers: members join, leave and
/// are SIGKILLed while an idempotent producer writes; every acknowledged record must be consumed
/// and the group's committed offsets must never move backwards. Once per group protocol.
@Suite(.serialized) struct GroupChurnTests {
    func churn(groupProtocol: String, brokerArguments: [String] = []) async throws {
        let cluster = try DevClusterProcess.make(
            brokersPerZone: 2, name: "churn-\(groupProtocol)", extraArguments: brokerArguments.map { "--broker-arg=\($0)" })
        defer { cluster.tearDown() }
        try cluster.start()
        try await cluster.waitUntilReady("floe dev with two brokers")
        let outcome = try await ClientScripts.run(
            "../groups/group_churn.py",
            [
                "--bootstrap", cluster.bootstrap, "--protocol", groupProtocol, "--topic", "churn-\(groupProtocol)-\(UInt32.random(in: 0...UInt32.max))",
                "--partitions", "24", "--consumers", "6", "--duration", "45", "--seed", "20261201", "--json", "--deadline", "160",
            ],
            timeout: .seconds(180))
        let passed = outcome.status == 0 && !outcome.timedOut && outcome.output.contains("{\"check\": \"done\", \"ok\": true}")
        #expect(passed, "group_churn.py --protocol \(groupProtocol): \(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
    }

    /// Classic members set session.timeout.ms=6000 and heartbeat.interval.ms=500 themselves.
    @Test(.timeLimit(.minutes(4))) func classicProtocolGroupSurvivesChurn() async throws {
        try await churn(groupProtocol: "classic")
    }

    /// KIP-848: the broker sets the session timeout and heartbeat interval, here the classic members' values.
    @Test(.timeLimit(.minutes(4))) func consumerProtocolGroupSurvivesChurn() async throws {
        try await churn(
            groupProtocol: "consumer", brokerArguments: ["--group-consumer-session-timeout-ms=6000", "--group-consumer-heartbeat-interval-ms=500"])
    }
}
