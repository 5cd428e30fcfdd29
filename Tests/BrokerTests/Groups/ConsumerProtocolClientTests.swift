import DevCluster
import Foundation
import TestKit
import Testing

/// confluent-kafka on the next-generation consumer protocol (KIP-848, `group.protocol=consumer`)
/// against `floe dev` (one controller, two brokers with a 6 s consumer session and 500 ms
/// heartbeats): incremental reconciliation, the range assignor, regex subscriptions, static
/// members, upgrade and downgrade between the protocols (of empty and of live groups), and
/// coordinator fail-over
/// (Tests/Compatibility/groups/consumer_protocol.py).
@Suite(.serialized) struct ConsumerProtocolClientTests {
    @Test(.timeLimit(.minutes(10))) func librdkafkaConsumersOnTheConsumerProtocol() async throws {
        let floe = try #require(DevClusterProcess.floeBinary(), "floe not built next to the tests")
        let directory = try temporaryDirectory("consumer-protocol")
        defer { removeDirectory(directory) }
        let base = try DevClusterProcess.freeBasePort(brokers: 2, zones: 1)
        let bootstrap = "127.0.0.1:\(base),127.0.0.1:\(base + 1)"
        let dev = try TestProcess(
            floe,
            [
                "dev", "up", "--data-dir", directory + "/data", "--base-port", "\(base)", "--brokers-per-zone", "2", "--log-level", "warning",
                "--grace-period", "5", "--broker-arg=--group-consumer-session-timeout-ms=6000",
                "--broker-arg=--group-consumer-heartbeat-interval-ms=500",
            ],
            logPath: directory + "/floe-dev.log")
        defer { dev.stop(SIGINT, within: .seconds(10)) }

        var attempt = 0
        let ready = try await waitUntil(timeout: .seconds(120), every: .milliseconds(500)) {
            attempt += 1
            let probe = try await GroupClientTests.run(["kcat", "-b", bootstrap, "-L", "-m", "3"], timeout: .seconds(10), log: directory + "/probe-\(attempt).log")
            return probe.status == 0 && probe.output.contains(" 2 brokers:")
        }
        try #require(ready, "floe dev did not come up")

        let script = GroupClientTests.scripts + "/consumer_protocol.py"
        for scenario in ["incremental", "range", "regex", "static", "upgrade", "online"] {
            GroupClientTests.expectPassed(
                try await GroupClientTests.run(["python3", script, bootstrap, scenario, "cp"], log: directory + "/\(scenario).log"),
                "consumer protocol: \(scenario)")
        }
        GroupClientTests.expectPassed(
            try await GroupClientTests.run(["python3", script, bootstrap, "failover", "cp", directory + "/data"], log: directory + "/failover.log"),
            "consumer protocol: coordinator fail-over")
    }
}
