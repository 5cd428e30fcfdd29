import Foundation
import TestKit
import Testing

/// confluent-kafka on the next-generation consumer protocol (KIP-848, `group.protocol=consumer`)
/// against `floe dev` (two brokers with a 6 s consumer session and 500 ms heartbeats):
/// incremental reconciliation, the range assignor, regex subscriptions, static members, upgrade
/// and downgrade between the protocols (of empty and of live groups), and coordinator fail-over
/// (Tests/Compatibility/groups/consumer_protocol.py).
@Suite(.serialized) struct ConsumerProtocolClientTests {
    @Test(.timeLimit(.minutes(10))) func librdkafkaConsumersOnTheConsumerProtocol() async throws {
        let cluster = try DevClusterProcess.make(
            brokersPerZone: 2, name: "consumer-protocol",
            extraArguments: ["--broker-arg=--group-consumer-session-timeout-ms=6000", "--broker-arg=--group-consumer-heartbeat-interval-ms=500"])
        defer { cluster.tearDown() }
        try cluster.start()
        try await cluster.waitUntilReady("floe dev with two brokers")

        let scenarios = ["incremental", "range", "regex", "static", "upgrade", "online"].map { [$0, "cp"] } + [["failover", "cp", cluster.dataDirectory]]
        for scenario in scenarios {
            let outcome = try await ClientScripts.run("../groups/consumer_protocol.py", [cluster.bootstrap] + scenario, timeout: .seconds(180))
            let passed = outcome.status == 0 && !outcome.timedOut && outcome.output.contains("{\"check\": \"done\", \"ok\": true}")
            #expect(passed, "consumer protocol \(scenario[0]): \(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
        }
    }
}
