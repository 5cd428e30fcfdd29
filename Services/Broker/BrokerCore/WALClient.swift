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

    public init(logger: Logger, requestTimeout: Duration = .seconds(10)) {
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
    /// answered (successfully or not) or the connection failed.
    public func enqueueAppend(
        on connection: KafkaConnection, stream: StreamID, epoch: LeaderEpoch, baseOffset: Int64, lastOffset: Int64, batches: ByteBuffer
    ) throws -> EventLoopFuture<ByteBuffer> {
        var request = WALAppendRequest()
        request.streamId = stream
        request.epoch = epoch
        request.baseOffset = baseOffset
        request.lastOffset = lastOffset
        request.batches = batches
        var body = ByteBuffer()
        body.reserveCapacity(batches.readableBytes + 64)
        try request.encode(to: &body, version: 0)
        return connection.enqueue(
            apiKey: ApiKey.wALAppend.rawValue, apiVersion: 0, headerVersion: ApiKey.wALAppend.requestHeaderVersion(0),
            responseHeaderVersion: ApiKey.wALAppend.responseHeaderVersion(0), clientId: "floe-broker", body: body,
            timeout: requestTimeout)
    }

    /// Decodes an append answer; nil on success.
    public static func appendError(_ body: ByteBuffer) -> WALCallError? {
        var body = body
        guard let response = try? WALAppendResponse(from: &body, version: 0) else {
            return WALCallError(code: KafkaErrorCode.unknownServerError.rawValue, message: "malformed WALAppend response")
        }
        guard response.errorCode != 0 else { return nil }
        return WALCallError(
            code: response.errorCode, message: response.errorMessage ?? "append refused",
            currentEpoch: response.currentEpoch, expectedBaseOffset: response.expectedBaseOffset)
    }

    /// Raises the stream's epoch at the writer; returns its durable end there (-1 if it never held the stream).
    public func fence(_ endpoint: KafkaEndpoint, stream: StreamID, epoch: LeaderEpoch) async throws -> Int64 {
        var request = WALFenceRequest()
        request.streamId = stream
        request.epoch = epoch
        let response: WALFenceResponse = try await call(control, endpoint, .wALFence, request, timeout: requestTimeout)
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
        let response: WALFlushResponse = try await call(control, endpoint, .wALFlush, request, timeout: timeout + requestTimeout)
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
        let response: WALReadResponse = try await call(reads, endpoint, .wALRead, request, timeout: requestTimeout)
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

    private func call<Request: KafkaStruct, Response: KafkaStruct>(
        _ client: KafkaClient, _ endpoint: KafkaEndpoint, _ key: ApiKey, _ request: Request, timeout: Duration
    ) async throws -> Response {
        var body = ByteBuffer()
        try request.encode(to: &body, version: 0)
        var reply = try await client.send(
            to: endpoint, apiKey: key.rawValue, apiVersion: 0, headerVersion: key.requestHeaderVersion(0),
            responseHeaderVersion: key.responseHeaderVersion(0), clientId: "floe-broker", body: body, timeout: timeout)
        return try Response(from: &reply, version: 0)
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
