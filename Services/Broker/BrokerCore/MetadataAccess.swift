import ClusterMetadata
import ControllerClient

/// Proposes metadata commands to the controller. `ControllerClient` is the real one; tests apply
/// commands to a local `MetadataState`.
public protocol MetadataWriter: Sendable {
    /// Commits `command` and returns its result with the Raft index it was applied at.
    func writeWithIndex(_ command: MetadataCommand) async throws -> (result: MetadataResult, index: UInt64)
}

/// The broker's in-memory image of the cluster metadata. `MetadataFollower` is the real one.
public protocol MetadataSource: Sendable {
    /// The latest applied image.
    var state: MetadataState { get async }
    /// Waits until the image has applied at least `version`; false on timeout.
    func waitForVersion(_ version: UInt64, timeout: Duration) async -> Bool
    /// Waits until the image has applied a command after log index `index` (its
    /// `lastAppliedIndex` passed it): the next change to an image read at that index.
    func waitForApplied(after index: UInt64, timeout: Duration) async -> Bool
}

extension MetadataSource {
    /// For sources whose version is the last applied command's index.
    public func waitForApplied(after index: UInt64, timeout: Duration) async -> Bool {
        await waitForVersion(index + 1, timeout: timeout)
    }
}

extension ControllerClient: MetadataWriter {}
extension MetadataFollower: MetadataSource {}

extension MetadataWriter {
    /// Commits `command`, then waits until `metadata` has applied it, so the caller's next read of
    /// the image sees its effect (Kafka clients expect a created topic in the next Metadata answer).
    public func writeAndWait(
        _ command: MetadataCommand, metadata: some MetadataSource, timeout: Duration = .seconds(10)
    ) async throws -> MetadataResult {
        let (result, index) = try await writeWithIndex(command)
        _ = await metadata.waitForVersion(index, timeout: timeout)
        return result
    }
}
