import ClusterMetadata
import ControllerClient

/// The compactor's view of the controller: the newest applied metadata, and writes that return once
/// that view includes them. The simulation drives the compactor through a fake of it.
public protocol CompactorMetadata: Sendable {
    /// The newest metadata this process has applied.
    func current() async -> MetadataState
    /// Commits `command` and returns its result once `current()` reflects it.
    func write(_ command: MetadataCommand) async throws -> MetadataResult
}

/// Why a compaction step could not go on; the pass is retried later.
public enum CompactorError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The controller refused a command or answered unexpectedly.
    case controller(String)
    /// The local metadata did not catch up with a write in time.
    case metadataBehind(UInt64)
    /// An object's contents disagree with the metadata that references it.
    case inconsistent(String)

    public var description: String {
        switch self {
        case .controller(let what): "controller: \(what)"
        case .metadataBehind(let index): "metadata did not reach version \(index)"
        case .inconsistent(let what): "inconsistent: \(what)"
        }
    }
}

/// `CompactorMetadata` over the real controller: a client for writes, a follower for the view.
public struct ControllerMetadata: CompactorMetadata {
    let client: ControllerClient
    let follower: MetadataFollower

    public init(client: ControllerClient, follower: MetadataFollower) {
        self.client = client
        self.follower = follower
    }

    public func current() async -> MetadataState { await follower.state }

    public func write(_ command: MetadataCommand) async throws -> MetadataResult {
        let (result, index) = try await client.writeWithIndex(command)
        guard await follower.waitForVersion(index, timeout: .seconds(10)) else { throw CompactorError.metadataBehind(index) }
        return result
    }
}
