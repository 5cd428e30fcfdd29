import KafkaProtocol
import KafkaTransport
import Logging
import Metrics
import NIOCore
import WALWriterCore

/// The APIs a WAL writer answers.
public let walWriterAdvertisedVersions = AdvertisedVersions([
    .init(.apiVersions, 0...4),
    .init(.wALAppend, 0...0),
    .init(.wALRead, 0...0),
    .init(.wALFence, 0...0),
    .init(.wALFlush, 0...0),
])

/// Serves a WAL writer's Kafka-framed port: Append, Read, Fence, Flush.
public struct WALRequestHandler: KafkaRequestHandler {
    let engine: WALEngine
    let uploader: WALUploader?
    let logger: Logger

    /// A handler over `engine`; Flush answers KAFKA_STORAGE_ERROR without an `uploader`.
    public init(engine: WALEngine, uploader: WALUploader?, logger: Logger) {
        self.engine = engine
        self.uploader = uploader
        self.logger = logger
    }

    /// Resolves request header versions for the APIs above; others close the connection.
    public static let resolver: KafkaHeaderVersionResolver = walWriterAdvertisedVersions.headerVersionResolver

    /// Read responses never exceed this many bytes beyond the first append, whatever the client asks.
    static let maxReadBytes = 16 << 20

    public func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        guard let key = ApiKey(rawValue: request.apiKey) else { return .immediate(.close(reason: "unknown api key \(request.apiKey)")) }
        let engine = engine
        let version = request.apiVersion
        switch key {
        case .apiVersions:
            let reply = ApiVersionsResponder.respond(version: request.apiVersion, body: request.body, advertised: walWriterAdvertisedVersions)
            return .immediate(.respond(body: reply.body, headerVersion: 0))
        case .wALAppend:
            guard let parsed = try? request.decode(WALAppendRequest.self) else {
                return .immediate(.close(reason: "malformed WALAppend"))
            }
            // Enqueued here, in arrival order, so one connection's appends of a stream reach the WAL in order.
            let start = ContinuousClock.now
            let ticket = await Self.enqueue(parsed, on: engine)
            let bytes = parsed.batches.readableBytes
            return KafkaPendingResponse {
                do throws(WALError) {
                    return Self.answer(.success(try await ticket.result()), bytes: bytes, start: start, version: version)
                } catch {
                    return Self.answer(.failure(error), bytes: bytes, start: start, version: version)
                }
            }
        case .wALRead:
            guard let parsed = try? request.decode(WALReadRequest.self) else {
                return .immediate(.close(reason: "malformed WALRead"))
            }
            return KafkaPendingResponse {
                var response = WALReadResponse()
                let limit = Int(min(max(parsed.maxBytes, 1), Int32(Self.maxReadBytes)))
                do {
                    let batches = try await engine.read(stream: UInt64(bitPattern: parsed.streamId), from: parsed.fromOffset, maxBytes: limit)
                    var joined = ByteBuffer()
                    joined.reserveCapacity(batches.reduce(0) { $0 + $1.readableBytes })
                    for batch in batches { joined.writeImmutableBuffer(batch) }
                    response.batches = joined
                } catch let error as WALError {
                    response.errorCode = Self.code(error)
                    response.errorMessage = error.description
                } catch {
                    response.errorCode = KafkaErrorCode.kafkaStorageError.rawValue
                    response.errorMessage = "\(error)"
                }
                return response.responseAction(version: version)
            }
        case .wALFence:
            guard let parsed = try? request.decode(WALFenceRequest.self) else {
                return .immediate(.close(reason: "malformed WALFence"))
            }
            return KafkaPendingResponse {
                var response = WALFenceResponse()
                do {
                    let end = try await engine.fence(stream: UInt64(bitPattern: parsed.streamId), epoch: parsed.epoch)
                    response.durableEndOffset = end ?? -1
                } catch let error as WALError {
                    response.errorCode = Self.code(error)
                    response.errorMessage = error.description
                    if case .fenced(_, let current) = error { response.currentEpoch = current }
                } catch {
                    response.errorCode = KafkaErrorCode.kafkaStorageError.rawValue
                    response.errorMessage = "\(error)"
                }
                return response.responseAction(version: version)
            }
        case .wALFlush:
            guard let parsed = try? request.decode(WALFlushRequest.self) else {
                return .immediate(.close(reason: "malformed WALFlush"))
            }
            let uploader = uploader
            return KafkaPendingResponse {
                var response = WALFlushResponse()
                guard let uploader else {
                    response.errorCode = KafkaErrorCode.kafkaStorageError.rawValue
                    response.errorMessage = "no uploader configured"
                    return response.responseAction(version: version)
                }
                let timeout = Duration.milliseconds(Int64(min(max(parsed.timeoutMs, 1), 300_000)))
                if let failure = await uploader.flush(timeout: timeout) {
                    response.errorCode = KafkaErrorCode.requestTimedOut.rawValue
                    response.errorMessage = failure
                }
                return response.responseAction(version: version)
            }
        default:
            return .immediate(.close(reason: "api \(key.name) not served by the WAL writer"))
        }
    }

    /// Appends on the engine's own loop: enqueued there without a task, answered from the engine's
    /// completion without one either. Anything else goes through `accept`.
    public func acceptOnLoop(_ request: KafkaRequestFrame, connection: ConnectionInfo) -> KafkaPendingResponse? {
        guard request.apiKey == ApiKey.wALAppend.rawValue, engine.eventLoop.inEventLoop else { return nil }
        guard let parsed = try? request.decode(WALAppendRequest.self) else {
            return .immediate(.close(reason: "malformed WALAppend"))
        }
        let start = ContinuousClock.now
        let ticket = engine.assumeIsolated { Self.enqueue(parsed, on: $0) }
        let bytes = parsed.batches.readableBytes
        let version = request.apiVersion
        let promise = engine.eventLoop.makePromise(of: KafkaResponseAction.self)
        ticket.whenComplete { result in promise.succeed(Self.answer(result, bytes: bytes, start: start, version: version)) }
        return KafkaPendingResponse(future: promise.futureResult)
    }

    private static func enqueue(_ request: WALAppendRequest, on engine: isolated WALEngine) -> AppendTicket {
        engine.enqueueAppend(
            stream: UInt64(bitPattern: request.streamId), epoch: request.epoch,
            baseOffset: request.baseOffset, lastOffset: request.lastOffset, batches: request.batches)
    }

    /// The answer to an append, with its metrics.
    private static func answer(_ result: Result<DurableAppend, WALError>, bytes: Int, start: ContinuousClock.Instant, version: Int16) -> KafkaResponseAction {
        var response = WALAppendResponse()
        switch result {
        case .success(let appended):
            response.lsn = Int64(clamping: appended.lsn)
            WALMetrics.appendBytes.increment(by: bytes)
            WALMetrics.appendSeconds.recordNanoseconds(nanoseconds(ContinuousClock.now - start))
        case .failure(let error):
            fill(&response, error)
            WALMetrics.appendErrors.increment()
        }
        return response.responseAction(version: version)
    }

    static func fill(_ response: inout WALAppendResponse, _ error: WALError) {
        response.errorCode = code(error)
        response.errorMessage = error.description
        switch error {
        case .fenced(_, let current): response.currentEpoch = current
        case .offsetMismatch(_, let expected): response.expectedBaseOffset = expected
        default: break
        }
    }

    /// The Kafka error code a WAL error is reported as.
    static func code(_ error: WALError) -> Int16 {
        switch error {
        case .fenced: KafkaErrorCode.fencedLeaderEpoch.rawValue
        case .offsetMismatch: KafkaErrorCode.offsetOutOfRange.rawValue
        case .invalidOffsets: KafkaErrorCode.invalidRequest.rawValue
        case .tooLarge: KafkaErrorCode.messageTooLarge.rawValue
        case .offsetNotInWAL: KafkaErrorCode.offsetNotAvailable.rawValue
        case .trimUncommitted, .trimBeyondDurable, .volume, .corruptVolume, .unavailable: KafkaErrorCode.kafkaStorageError.rawValue
        }
    }
}

/// The append path's metrics, created once (after the metrics system is bootstrapped, on first use) rather
/// than looked up in the registry on every append.
enum WALMetrics {
    static let appendBytes = Counter(label: "floe_wal_append_bytes_total")
    static let appendSeconds = Timer(label: "floe_wal_append_seconds")
    static let appendErrors = Counter(label: "floe_wal_append_errors_total")
}

/// A duration in whole nanoseconds, for swift-metrics timers.
func nanoseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
}
