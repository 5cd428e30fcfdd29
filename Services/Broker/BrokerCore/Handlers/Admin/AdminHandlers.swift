import ClusterMetadata
import ControllerClient
import KafkaProtocol
import Logging

/// Kafka's topic and config administration APIs (CreateTopics, DeleteTopics, CreatePartitions,
/// DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, DescribeCluster, partition
/// reassignments) and topic auto-creation. Changes go to the controller as metadata commands; reads
/// come from the broker's metadata image.
public struct AdminHandlers: Sendable {
    let settings: BrokerSettings
    let writer: any MetadataWriter
    let metadata: any MetadataSource
    let now: @Sendable () -> Int64
    let logger: Logger

    /// Longest wait for the image to show a committed change before answering anyway (Kafka in
    /// KRaft mode answers once the controller committed; the wait only spares clients a stale read).
    static let maxImageWait: Duration = .seconds(30)

    /// - Parameters:
    ///   - now: wall-clock milliseconds, stamped into commands that need a time (topic deletion).
    public init(
        settings: BrokerSettings, writer: any MetadataWriter, metadata: any MetadataSource,
        now: @escaping @Sendable () -> Int64, logger: Logger
    ) {
        self.settings = settings
        self.writer = writer
        self.metadata = metadata
        self.now = now
        self.logger = logger
    }

    /// What committing (or dry-running) a command produced.
    enum Outcome {
        case applied(MetadataResult)
        /// The controller could not be reached or refused the request as a whole.
        case failed(code: Int16, message: String)
    }

    /// Commits `command` and waits (up to `waitMs`, capped) until the image shows it. With
    /// `validateOnly` it is applied to a private copy of the image instead, so every check the
    /// controller would make runs and nothing changes.
    func execute(_ command: MetadataCommand, validateOnly: Bool, waitMs: Int32) async -> Outcome {
        if validateOnly {
            var copy = await metadata.state
            guard copy.lastAppliedIndex < UInt64.max else {
                return .failed(code: KafkaErrorCode.unknownServerError.rawValue, message: "metadata index exhausted")
            }
            return .applied(copy.apply(command, index: copy.lastAppliedIndex + 1, term: copy.lastAppliedTerm))
        }
        let result: MetadataResult
        let index: UInt64
        do {
            (result, index) = try await writer.writeWithIndex(command)
        } catch let error as ControllerClientError {
            logger.warning("admin command failed at the controller", metadata: ["error": "\(error)"])
            switch error {
            case .server(let code, let message):
                return .failed(code: code, message: message ?? "controller error \(code)")
            case .unavailable(let reason):
                return .failed(code: KafkaErrorCode.requestTimedOut.rawValue, message: "controller unavailable: \(reason)")
            case .malformedResponse(let reason):
                return .failed(code: KafkaErrorCode.unknownServerError.rawValue, message: "malformed controller response: \(reason)")
            case .invalidEndpoint(let text):
                return .failed(code: KafkaErrorCode.requestTimedOut.rawValue, message: "controller endpoint \(text) is invalid")
            }
        } catch {
            logger.warning("admin command failed at the controller", metadata: ["error": "\(error)"])
            return .failed(code: KafkaErrorCode.requestTimedOut.rawValue, message: "controller request failed: \(error)")
        }
        let wait = min(Duration.milliseconds(Int64(max(0, waitMs))), Self.maxImageWait)
        if wait > .zero, !(await metadata.waitForVersion(index, timeout: wait)) {
            logger.notice("metadata image did not reach a committed admin change in time", metadata: ["index": "\(index)"])
        }
        return .applied(result)
    }

    /// Per-item outcomes of a batch command, aligned with the `count` items sent; a whole-command
    /// failure becomes the same error for every item.
    static func itemResults(_ outcome: Outcome, count: Int) -> [(code: Int16, message: String?)] {
        switch outcome {
        case .failed(let code, let message):
            return Array(repeating: (code, message), count: count)
        case .applied(.items(let items)) where items.count == count:
            return items.map { ($0.errorCode, $0.message) }
        case .applied(.error(let error)):
            return Array(repeating: (error.code, error.message), count: count)
        case .applied(let other):
            return Array(
                repeating: (KafkaErrorCode.unknownServerError.rawValue, "unexpected controller result \(other)"), count: count)
        }
    }

    /// The outcome of a single (non-batch) command as an error code and message.
    static func singleResult(_ outcome: Outcome) -> (code: Int16, message: String?) {
        switch outcome {
        case .failed(let code, let message): return (code, message)
        case .applied(.error(let error)): return (error.code, error.message)
        case .applied: return (0, nil)
        }
    }

    /// Checks manual replica assignments the way Kafka does; Floe keeps one durable copy and places
    /// leaders itself, so valid assignments are accepted and their placement is not used.
    static func validateAssignment(_ brokerIds: [Int32], state: MetadataState) -> String? {
        guard !brokerIds.isEmpty else { return "The manual partition assignment includes an empty replica list." }
        guard Set(brokerIds).count == brokerIds.count else {
            return "The manual partition assignment includes duplicate replicas \(brokerIds)."
        }
        for id in brokerIds {
            guard let node = state.nodes[id], node.kind == .broker else {
                return "The manual partition assignment includes broker \(id), which is not registered."
            }
        }
        return nil
    }

    /// Kafka's message for a name `MetadataState.validateTopicName` refuses.
    static func illegalTopicMessage(_ name: String, _ error: MetadataError) -> String {
        "Topic name '\(name)' is illegal: \(error.message)"
    }
}
