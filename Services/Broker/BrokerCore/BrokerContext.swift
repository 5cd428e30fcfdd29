import ClusterMetadata
import KafkaProtocol
import Logging
import NIOCore
import Synchronization

/// Reads committed stream data from object storage.
public protocol CommittedDataReader: Sendable {
    /// Whole batches of `stream` from the one containing `offset`, about `maxBytes` (at least one batch),
    /// using the committed objects `state` lists.
    func readCommitted(stream: StreamID, from offset: Int64, maxBytes: Int, state: MetadataState) async throws -> ByteBuffer
}

/// Everything a request handler reaches: settings, the metadata image, the controller, the led
/// partitions and the read path.
public final class BrokerContext: Sendable {
    public let settings: BrokerSettings
    public let metadata: any MetadataSource
    public let writer: any MetadataWriter
    public let replicas: ReplicaManager
    public let wal: WALClient
    public let committed: any CommittedDataReader
    /// KIP-227 fetch sessions of this broker's clients.
    public let fetchSessions: FetchSessions
    public let logger: Logger
    /// Creates missing topics (Metadata auto-creation; Produce never creates topics); per-topic error codes.
    public let autoCreate: @Sendable ([String]) async -> [String: Int16]
    /// Wall-clock milliseconds.
    public let now: @Sendable () -> Int64
    /// Zone routing: writes produces for partitions led from other zones into routed objects (nil without it).
    public let router: ProduceRouter?
    /// Zone routing: appends claims of routed objects for partitions led here.
    public let claims: RoutedClaims?
    /// Set once this broker has seen itself among the active brokers of its metadata image.
    private let listed = Atomic<Bool>(false)

    public init(
        settings: BrokerSettings, metadata: any MetadataSource, writer: any MetadataWriter, replicas: ReplicaManager, wal: WALClient,
        committed: any CommittedDataReader, logger: Logger,
        autoCreate: @escaping @Sendable ([String]) async -> [String: Int16],
        now: @escaping @Sendable () -> Int64, router: ProduceRouter? = nil, claims: RoutedClaims? = nil
    ) {
        self.settings = settings
        self.metadata = metadata
        self.writer = writer
        self.replicas = replicas
        self.wal = wal
        self.committed = committed
        self.fetchSessions = FetchSessions(
            slots: settings.maxIncrementalFetchSessionCacheSlots, maxPartitions: settings.maxIncrementalFetchSessionCachePartitions,
            minEvictionAgeMs: settings.minIncrementalFetchSessionEvictionMs)
        self.logger = logger
        self.autoCreate = autoCreate
        self.now = now
        self.router = router
        self.claims = claims
    }

    /// Whether `waitUntilListed` has nothing left to wait for.
    public var isListed: Bool { listed.load(ordering: .acquiring) }

    /// Returns once this broker is among the active brokers of its metadata image, or after
    /// `timeout`. The listener opens before the broker's registration reaches its own image; a
    /// request answered in that window would list no broker (or not this one), which clients
    /// take as a failed bootstrap and retry only after their own timeouts. Startup only: once
    /// listed (or once the wait has timed out) this is one atomic load.
    public func waitUntilListed(timeout: Duration = .seconds(10)) async {
        guard !listed.load(ordering: .acquiring) else { return }
        let deadline = ContinuousClock.now + timeout
        while true {
            let state = await metadata.state
            if state.activeBrokers.contains(where: { $0.id == settings.nodeId }) { break }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                logger.warning("answering before this broker is in its own metadata image", metadata: ["waited": "\(timeout)"])
                break
            }
            _ = await metadata.waitForApplied(after: state.lastAppliedIndex, timeout: min(remaining, .milliseconds(500)))
        }
        listed.store(true, ordering: .releasing)
    }
}

extension CommittedReader: CommittedDataReader {
    public func readCommitted(stream: StreamID, from offset: Int64, maxBytes: Int, state: MetadataState) async throws -> ByteBuffer {
        try await read(stream: stream, from: offset, maxBytes: maxBytes, segments: committedSegments(in: state, stream: stream, from: offset))
    }
}
