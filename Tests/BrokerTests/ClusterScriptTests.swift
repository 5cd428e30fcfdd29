import Foundation
import Testing

/// Whole-cluster checks driven by Python scripts: leadership moved back and forth under an
/// idempotent producer, metadata as the listener opens, idempotent producers' state expiring, the data path on a real S3 server (SeaweedFS), and a short chaos run
/// (every kind of service SIGKILLed or paused under idempotent producers and a consumer group).
@Suite(.serialized) struct ClusterScriptTests {
    @Test(.timeLimit(.minutes(6))) func leadershipMovesBackAndForthUnderLoad() async throws {
        let cluster = try DevClusterProcess.make(zones: ["a", "b"], brokersPerZone: 1, name: "moves")
        defer { cluster.tearDown() }
        try cluster.start()
        try await cluster.waitUntilReady("floe dev with two zones")
        let outcome = try await ClientScripts.run(
            "../broker/reassign_under_load.py",
            ["--bootstrap", cluster.bootstrap, "--floe", cluster.binary, "--topic", "moves-\(UInt32.random(in: 0...UInt32.max))"],
            timeout: .seconds(300))
        let passed = outcome.status == 0 && !outcome.timedOut
        #expect(passed, "\(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
    }

    /// The listener opens before the broker's registration reaches its own metadata image; a
    /// Metadata request in that window must still list the broker (librdkafka otherwise gives up
    /// on the bootstrap until its own timeouts).
    @Test(.timeLimit(.minutes(3))) func aClientConnectingAsTheListenerOpensGetsUsableMetadata() async throws {
        let cluster = try DevClusterProcess.make(brokersPerZone: 1, name: "first-metadata")
        defer { cluster.tearDown() }
        try cluster.start()
        let outcome = try await ClientScripts.run(
            "../broker/first_metadata.py", ["--bootstrap", cluster.bootstrap, "--node-id", "101"], timeout: .seconds(90))
        let passed = outcome.status == 0 && !outcome.timedOut
        #expect(passed, "\(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
    }

    @Test(.timeLimit(.minutes(3))) func idempotentProducersAreForgottenAfterTheExpiry() async throws {
        let cluster = try DevClusterProcess.make(
            brokersPerZone: 1, name: "expiry", extraArguments: ["--broker-arg=--producer-id-expiration-ms=1500"])
        defer { cluster.tearDown() }
        try cluster.start()
        try await cluster.waitUntilReady("floe dev")
        let outcome = try await ClientScripts.run(
            "../broker/producer_expiry.py",
            ["--bootstrap", cluster.bootstrap, "--topic", "expiry-\(UInt32.random(in: 0...UInt32.max))", "--expiry-ms", "1500"],
            timeout: .seconds(120))
        let passed = outcome.status == 0 && !outcome.timedOut
        #expect(passed, "\(outcome)\n--- floe dev ---\n\(cluster.logTail())\n\(passed ? "" : cluster.keepForInspection())")
    }

    @Test(.timeLimit(.minutes(6))) func recordsSurviveLosingEveryWALVolumeOnS3() async throws {
        let floe = try #require(DevClusterProcess.floeBinary(), "floe is not built next to the tests")
        let outcome = try await ClientScripts.run("../broker/s3_end_to_end.py", ["--floe", floe], timeout: .seconds(300))
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
    }

    /// The short version of `Tests/Chaos/chaos.py` (run it with `--duration 600` for the long one).
    @Test(.timeLimit(.minutes(9))) func chaosRunLosesAndDuplicatesNothing() async throws {
        let floe = try #require(DevClusterProcess.floeBinary(), "floe is not built next to the tests")
        let outcome = try await ClientScripts.run(
            "../../Chaos/chaos.py", ["--floe", floe, "--duration", "120", "--seed", "20261122"], timeout: .seconds(480))
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
    }
}
