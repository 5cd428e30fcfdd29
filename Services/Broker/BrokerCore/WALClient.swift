import ClusterMetadata
import KafkaProtocol
import KafkaTransport
import Logging
import NIOCore

/// A WAL writer's answer that is not a success.
public struct WALCallError: Error, Sendable, CustomStringConvertible {
    public var code: Int16
    public var message: String
    /// FENCED_LEADER_EPOCH: the writer's epoch of the stream.
    public var currentEpoch: Int32 = -1
    /// OFFSET_OUT_OF_RANGE: where the writer expects the stream to continue.
    public var expectedBaseOffset: Int64 = -1

    public var description: String { "WAL writer error \(code): \(message)" }
}

/// Talks to WAL writers. Appends go over one pipelined connection per writer and are queued
/// synchronously (`enqueueAppend`), so the order a partition enqueues them in is the order the
/// writer receives them. Fence, Flush and Read use separate connections: a Flush waits for an
/// upload, and appends' answers must not queue behind it.
public final class WALClient: Sendable {
    private let appends: KafkaClient
    private let control: KafkaClient
    private let reads: KafkaClient
    /// Bound on any one call (a Flush waits at most its own timeout plus this).
    public let requestTimeout: Duration
    /// Carries the broker's zone (`ClientZone`), so the writer counts cross-zone bytes right.
    private let clientId: String

    public init(logger: Logger, requestTimeout: Duration = .seconds(10), zone: String? = nil) {
        clientId = zone.map { ClientZone.tagging("floe-broker", zone: $0) } ?? "floe-broker"
        appends = KafkaClient(logger: logger)
        control = KafkaClient(logger: logger)
        reads = KafkaClient(logger: logger)
        self.requestTimeout = requestTimeout
    }

    /// The append connection to `endpoint`, opened if needed.
    public func appendConnection(_ endpoint: KafkaEndpoint) async throws -> KafkaConnection {
        try await appends.connection(to: endpoint)
    }

    /// Queues one append on `connection` before returning; the future completes once the writer
    /// answered (with the writer's refusal, nil on success) or fails once the connection failed.
    public func enqueueAppend(
        on connection: KafkaConnection, stream: StreamID, epoch: LeaderEpoch, baseOffset: Int64, lastOffset: Int64, batches: ByteBuffer
    ) throws -> EventLoopFuture<WALCallError?> {
        var request = WALAppendRequest()
        request.streamId = stream
        request.epoch = epoch
        request.baseOffset = baseOffset
        request.lastOffset = lastOffset
        request.batches = batches
        return try connection.enqueue(
            request, version: 0, clientId: clientId, timeout: requestTimeout, bodyCapacity: batches.readableBytes + 64
        ).map { response in
            guard response.errorCode != 0 else { return nil }
            return WALCallError(
                code: response.errorCode, message: response.errorMessage ?? "append refused",
                currentEpoch: response.currentEpoch, expectedBaseOffset: response.expectedBaseOffset)
        }.flatMapErrorThrowing { error in
            // An answer that does not decode is the writer's failure, not the connection's.
            guard error is KafkaResponseDecodingError else { throw error }
            return WALCallError(code: KafkaErrorCode.unknownServerError.rawValue, message: "malformed WALAppend response")
        }
    }

    /// Raises the stream's epoch at the writer; returns its durable end there (-1 if it never held the stream).
    public func fence(_ endpoint: KafkaEndpoint, stream: StreamID, epoch: LeaderEpoch) async throws -> Int64 {
        var request = WALFenceRequest()
        request.streamId = stream
        request.epoch = epoch
        let response = try await control.send(request, version: 0, to: endpoint, clientId: clientId, timeout: requestTimeout)
        guard response.errorCode == 0 else {
            throw WALCallError(code: response.errorCode, message: response.errorMessage ?? "fence refused", currentEpoch: response.currentEpoch)
        }
        return response.durableEndOffset
    }

    /// Asks the writer to upload and commit everything durable now; returns once committed.
    public func flush(_ endpoint: KafkaEndpoint, stream: StreamID, timeout: Duration) async throws {
        var request = WALFlushRequest()
        request.streamId = stream
        request.timeoutMs = Int32(clamping: timeout.milliseconds)
        let response = try await control.send(request, version: 0, to: endpoint, clientId: clientId, timeout: timeout + requestTimeout)
        guard response.errorCode == 0 else {
            throw WALCallError(code: response.errorCode, message: response.errorMessage ?? "flush failed")
        }
    }

    /// Whole appends of `stream` from `offset` held (durable, not yet trimmed) by the writer;
    /// throws OFFSET_NOT_AVAILABLE when the writer no longer holds the offset.
    public func read(_ endpoint: KafkaEndpoint, stream: StreamID, from offset: Int64, maxBytes: Int32) async throws -> ByteBuffer {
        var request = WALReadRequest()
        request.streamId = stream
        request.fromOffset = offset
        request.maxBytes = maxBytes
        let response = try await reads.send(request, version: 0, to: endpoint, clientId: clientId, timeout: requestTimeout)
        guard response.errorCode == 0 else {
            throw WALCallError(code: response.errorCode, message: response.errorMessage ?? "read refused")
        }
        return response.batches
    }

    public func close() async {
        await appends.closeAll()
        await control.closeAll()
        await reads.closeAll()
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
