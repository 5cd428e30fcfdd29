import ClusterMetadata
import KafkaProtocol
import Logging
import NIOCore

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
    public let logger: Logger
    /// Creates missing topics (Metadata and Produce auto-creation); per-topic error codes.
    public let autoCreate: @Sendable ([String]) async -> [String: Int16]
    /// Wall-clock milliseconds.
    public let now: @Sendable () -> Int64

    public init(
        settings: BrokerSettings, metadata: any MetadataSource, writer: any MetadataWriter, replicas: ReplicaManager, wal: WALClient,
        committed: any CommittedDataReader, logger: Logger,
        autoCreate: @escaping @Sendable ([String]) async -> [String: Int16],
        now: @escaping @Sendable () -> Int64
    ) {
        self.settings = settings
        self.metadata = metadata
        self.writer = writer
        self.replicas = replicas
        self.wal = wal
        self.committed = committed
        self.logger = logger
        self.autoCreate = autoCreate
        self.now = now
    }
}

extension CommittedReader: CommittedDataReader {
    public func readCommitted(stream: StreamID, from offset: Int64, maxBytes: Int, state: MetadataState) async throws -> ByteBuffer {
        try await read(stream: stream, from: offset, maxBytes: maxBytes, segments: committedSegments(in: state, stream: stream, from: offset))
    }
}
