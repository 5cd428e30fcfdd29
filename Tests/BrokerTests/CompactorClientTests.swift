import Foundation
import Testing

/// The compactor end to end on a real S3 server (SeaweedFS), checked by listing and reading the
/// bucket: `Tests/Compatibility/compactor/compaction_e2e.py` starts its own SeaweedFS and `floe dev`.
@Suite(.serialized) struct CompactorClientTests {
    // Each script's own deadline comes before the time-out here, so it still stops what it started.

    /// 100,000 keyed records on 50 partitions: no stream-set object left, at most three stream
    /// objects per partition, every record read back byte for byte at its offset.
    @Test(.timeLimit(.minutes(9))) func streamSetObjectsBecomeFewStreamObjectsAndEveryRecordReadsBack() async throws {
        let floe = try #require(DevClusterProcess.floeBinary(), "floe is not built next to the tests")
        let outcome = try await ClientScripts.run("../compactor/compaction_e2e.py", ["merge", "--floe", floe, "--deadline", "420"], timeout: .seconds(480))
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
    }

    /// retention.ms moves the log start to the end and the topic's objects leave the bucket; a
    /// deleted topic's objects go after the grace period; the kept topic stays whole.
    @Test(.timeLimit(.minutes(6))) func retentionAndTopicDeletionEmptyTheBucketOfTheirData() async throws {
        let floe = try #require(DevClusterProcess.floeBinary(), "floe is not built next to the tests")
        let outcome = try await ClientScripts.run("../compactor/compaction_e2e.py", ["retention", "--floe", floe, "--deadline", "240"], timeout: .seconds(300))
        #expect(outcome.status == 0 && !outcome.timedOut, "\(outcome)")
    }
}
