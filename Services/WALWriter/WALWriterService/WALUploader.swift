import ClusterMetadata
import ControllerClient
import EventLoopTimers
import KafkaTransport
import Logging
import Metrics
import NIOCore
import ObjectStorage
import WALWriterCore

#if canImport(Glibc)
import Glibc
#endif

/// Why one upload attempt failed; the uploader retries it.
public enum WALUploadError: Error, CustomStringConvertible, Sendable {
    /// The controller refused a command or answered unexpectedly.
    case controller(String)
    /// The WAL's data and the committed metadata disagree.
    case inconsistent(String)

    public var description: String {
        switch self {
        case .controller(let what): "controller: \(what)"
        case .inconsistent(let what): "inconsistent: \(what)"
        }
    }
}

/// Moves durable WAL data to object storage: one stream-set object per upload, committed at the controller, then trimmed.
public actor WALUploader {
    let engine: WALEngine
    let store: any ObjectStore
    let controller: ControllerClient
    let metadata: MetadataFollower
    let logger: Logger
    /// How long a prepared object id stays valid at the controller.
    let prepareLifetimeMillis: Int64 = 10 * 60_000
    private var tail: Task<Void, any Error>?
    /// Wall-clock milliseconds of the last successful upload, 0 if none.
    public private(set) var lastUploadMillis: Int64 = 0
    /// Successful uploads (PUT and commit).
    public private(set) var uploads = 0
    /// Background upload attempts that failed and were retried.
    public private(set) var failedAttempts = 0

    /// An uploader for `engine`; `metadata` must be running so committed ends and epochs are current.
    public init(engine: WALEngine, store: any ObjectStore, controller: ControllerClient, metadata: MetadataFollower, logger: Logger) {
        self.engine = engine
        self.store = store
        self.controller = controller
        self.metadata = metadata
        self.logger = logger
    }

    /// Uploads everything durable now; uploads never overlap (each waits for the previous one).
    public func uploadNow() async throws {
        let previous = tail
        let task = Task {
            _ = await previous?.result
            try await self.performUpload()
        }
        tail = task
        try await task.value
    }

    /// Retries `uploadNow` with backoff until it succeeds (nil) or `timeout` passes (the last error).
    public func flush(timeout: Duration) async -> String? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var delay = Duration.milliseconds(50)
        while true {
            do {
                try await uploadNow()
                return nil
            } catch {
                if clock.now + delay >= deadline || Task.isCancelled { return "\(error)" }
                try? await LoopTimers.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    /// Uploads every `interval`, or sooner once `thresholdBytes` are pending; backs off on failures; runs until cancelled.
    public func run(interval: Duration, thresholdBytes: Int) async {
        let clock = ContinuousClock()
        var lastAttempt = clock.now
        var backoff = Duration.zero
        // Polls the pending byte count at a fraction of the interval so the size trigger fires promptly.
        let poll = max(min(interval / 5, .milliseconds(50)), .milliseconds(5))
        while !Task.isCancelled {
            do { try await LoopTimers.sleep(for: poll) } catch { return }
            let pending = await engine.stats().durableUntrimmedBytes
            let elapsed = clock.now - lastAttempt
            // After a failure the backoff alone decides the retry: the data is already due.
            let due = backoff > .zero ? elapsed >= backoff : (elapsed >= interval || pending >= thresholdBytes)
            guard due, pending > 0 else { continue }
            lastAttempt = clock.now
            do {
                try await uploadNow()
                backoff = .zero
            } catch {
                Counter(label: "floe_wal_upload_errors_total").increment()
                failedAttempts += 1
                backoff = backoff == .zero ? .milliseconds(100) : min(backoff * 2, .seconds(10))
                logger.warning("upload failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
            }
        }
    }

    private func performUpload() async throws {
        let snapshot = await engine.pendingUpload()
        guard !snapshot.streams.isEmpty else { return }
        let started = ContinuousClock.now
        let (prepared, preparedIndex) = try await controller.writeWithIndex(
            .prepareObject(kind: .streamSet, deadline: wallClockMillis() + prepareLifetimeMillis))
        guard case .objectPrepared(let objectId) = prepared else { throw WALUploadError.controller("prepareObject answered \(prepared)") }
        guard await metadata.waitForVersion(preparedIndex, timeout: .seconds(5)) else {
            throw WALUploadError.controller("metadata did not reach version \(preparedIndex)")
        }
        let state = await metadata.state
        var writer = ObjectWriter(expectedBytes: snapshot.streams.reduce(0) { $0 + $1.bytes })
        var ranges: [StreamRange] = []
        var ends: [UInt64: Int64] = [:]
        for pending in snapshot.streams {
            let streamId = StreamID(bitPattern: pending.stream)
            guard let record = state.streams[streamId] else {
                // The metadata is at least as new as the prepare, and stream ids are never reused: the stream was
                // deleted, so its data is dropped rather than left to block every later trim.
                logger.warning("dropping WAL data of a stream the controller no longer has", metadata: [
                    "stream": "\(pending.stream)", "offsets": "\(pending.baseOffset)..<\(pending.endOffset)",
                ])
                Counter(label: "floe_wal_dropped_stream_ranges_total").increment()
                ends[pending.stream] = pending.endOffset
                continue
            }
            var start: Int64? = nil
            var end = record.committedEnd
            // Appends already committed by an earlier attempt (a crash between commit and trim) are skipped.
            for entry in await engine.entries(stream: pending.stream, below: snapshot.upToLSN) where entry.lastOffset >= record.committedEnd {
                guard entry.baseOffset >= record.committedEnd else {
                    throw WALUploadError.inconsistent("stream \(streamId): committed end \(record.committedEnd) inside append \(entry.baseOffset)...\(entry.lastOffset)")
                }
                guard entry.epoch <= record.epoch else {
                    throw WALUploadError.controller("stream \(streamId): metadata epoch \(record.epoch) behind WAL epoch \(entry.epoch)")
                }
                do {
                    try writer.append(
                        streamID: pending.stream, firstOffset: entry.baseOffset, endOffset: entry.lastOffset + 1,
                        recordCount: Int32(clamping: entry.lastOffset - entry.baseOffset + 1),
                        maxTimestamp: Self.maxTimestamp(entry.batches), batches: entry.batches)
                } catch {
                    throw WALUploadError.inconsistent("stream \(streamId): \(error)")
                }
                if start == nil { start = entry.baseOffset }
                end = entry.lastOffset + 1
            }
            ends[pending.stream] = end
            if let start {
                // A fenced tail is committed under the epoch the stream has now (ClusterMetadata README).
                ranges.append(StreamRange(streamId: streamId, epoch: record.epoch, startOffset: start, endOffset: end))
            }
        }
        if !ranges.isEmpty {
            let object: ByteBuffer
            do { object = try writer.finish() } catch { throw WALUploadError.inconsistent("\(error)") }
            let key = ObjectKey.make(id: UInt64(bitPattern: objectId), kind: .streamSet)
            try await store.put(key, object)
            Counter(label: "floe_wal_object_puts_total").increment()
            Counter(label: "floe_wal_uploaded_bytes_total").increment(by: object.readableBytes)
            let commit = ObjectCommit(objectId: objectId, size: Int64(object.readableBytes), ranges: ranges)
            let result = try await controller.write(.commitObject(commit, compactedSources: [], now: wallClockMillis()))
            guard case .ok = result else { throw WALUploadError.controller("commitObject answered \(result)") }
        } else {
            _ = try? await controller.write(.releaseObjects([objectId], now: wallClockMillis()))
        }
        try await engine.trim(upTo: snapshot.upToLSN, committedEnds: ends)
        uploads += 1
        lastUploadMillis = wallClockMillis()
        Counter(label: "floe_wal_uploads_total").increment()
        Timer(label: "floe_wal_upload_seconds").recordNanoseconds(nanoseconds(ContinuousClock.now - started))
        logger.debug("uploaded", metadata: ["object": "\(objectId)", "streams": "\(ranges.count)"])
    }

    /// The largest maxTimestamp of the Kafka record batches in `batches`, -1 if none can be read.
    static func maxTimestamp(_ batches: ByteBuffer) -> Int64 {
        var result: Int64 = -1
        var position = batches.readerIndex
        let end = batches.writerIndex
        // Record batch v2 header: baseOffset(8) batchLength(4) … maxTimestamp at byte 35.
        while position + 43 <= end {
            guard let length = batches.getInteger(at: position + 8, as: Int32.self), length > 0,
                  let stamp = batches.getInteger(at: position + 35, as: Int64.self) else { break }
            result = max(result, stamp)
            let next = position + 12 + Int(length)
            guard next > position else { break }
            position = next
        }
        return result
    }

}
