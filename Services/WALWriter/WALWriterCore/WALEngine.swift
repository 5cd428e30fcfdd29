// About 400 lines on purpose: the engine's one actor (appends, group commit, reads, trims, fences) whose
// state must change together; the batching rules, format and recovery already live in their own files.
import DequeModule
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The WAL of one volume: durable appends with group commit, reads of the untrimmed tail,
/// fencing and trimming. Blocking file work runs on a dedicated thread.
public actor WALEngine {
    /// The event loop the engine's code runs on: its executor, so a handler already on that loop can
    /// submit an append without a task (`assumeIsolated`).
    public nonisolated let eventLoop: any EventLoop
    public nonisolated var unownedExecutor: UnownedSerialExecutor { eventLoop.executor.asUnownedSerialExecutor() }

    /// Engine settings.
    public struct Configuration: Sendable {
        /// The volume's directory (created if missing).
        public var directory: String
        /// Preallocated size of each segment file.
        public var segmentSize: Int
        /// Bound on admitted-but-untrimmed bytes; appends wait beyond it.
        public var maxBufferedBytes: Int
        /// Bound on one group write.
        public var maxWriteBytes: Int
        /// Bound on admitted bytes not yet durable; appends wait beyond it.
        public var maxUnsyncedBytes: Int
        /// Zero-fill new segments ahead of use (cheaper syncs than fallocated extents).
        public var zeroFillSegments: Bool
        /// Write appends with O_DIRECT in whole 4 KiB blocks where the file system allows it (otherwise,
        /// or when false, through the page cache). Syncs after idle periods are faster this way.
        public var directWrites: Bool
        /// Opt-in: a small write that finds the WAL idle for at least this long is carried out on the
        /// calling thread instead of the I/O thread (nil, the default: never, so pwrite and fdatasync
        /// always run off the event loop). At light load it saves two thread wake-ups per append;
        /// under load writes follow each other closely and always go to the I/O thread. When set, it
        /// holds the loop for one sync of at most 64 KiB, only after the WAL has been idle; measured
        /// gain at 100 appends/s is ~0.07 ms at the p50 and none at the p99 (BENCHMARKS.md).
        public var inlineWriteAfterIdle: Duration?

        public init(
            directory: String, segmentSize: Int = 64 << 20, maxBufferedBytes: Int = 256 << 20, maxWriteBytes: Int = 8 << 20,
            maxUnsyncedBytes: Int = 64 << 20, zeroFillSegments: Bool = true, inlineWriteAfterIdle: Duration? = nil,
            directWrites: Bool = true
        ) {
            self.directWrites = directWrites
            self.inlineWriteAfterIdle = inlineWriteAfterIdle
            self.maxUnsyncedBytes = maxUnsyncedBytes
            self.zeroFillSegments = zeroFillSegments
            self.directory = directory
            self.segmentSize = segmentSize
            self.maxBufferedBytes = maxBufferedBytes
            self.maxWriteBytes = maxWriteBytes
        }
    }

    private let logger: Logger
    private let volume: WALVolume
    private let pool: NIOThreadPool
    private var core: WALBatcher
    private var index: [UInt64: Deque<StoredBatch>]
    private var committedEnds: [UInt64: Int64] = [:]
    private enum Waiter {
        case continuation(CheckedContinuation<WALBatcher.Outcome, Never>)
        case ticket(AppendTicket)
    }

    private var waiting: [WALRequestID: (Waiter, ContinuousClock.Instant)] = [:]
    /// Jobs on the I/O thread that touch the volume; an inline write needs it to be free.
    private var ioJobs = 0
    /// When the last write ended (nil before the first).
    private var lastWriteEnd: ContinuousClock.Instant?
    private let inlineWriteAfterIdle: Duration?
    /// Bound on a write carried out inline.
    private static let maxInlineWriteBytes = 64 << 10
    private var payloads: [WALRequestID: ByteBuffer] = [:]
    private var nextRequest: WALRequestID = 1
    private var durableLSN: LSN
    private var trimLSN: LSN
    private var statistics = WALStats()
    private var closed = false

    private init(
        configuration: Configuration, logger: Logger, volume: WALVolume, pool: NIOThreadPool, recovered: RecoveredState, eventLoop: any EventLoop
    ) {
        self.eventLoop = eventLoop
        self.logger = logger
        self.volume = volume
        self.pool = pool
        let maxRecord = configuration.segmentSize - WALFormat.segmentHeaderSize
        self.core = WALBatcher(
            configuration: .init(
                maxBufferedBytes: configuration.maxBufferedBytes, maxWriteBytes: configuration.maxWriteBytes,
                maxRecordBytes: maxRecord, maxUnsyncedBytes: configuration.maxUnsyncedBytes),
            nextLSN: recovered.nextLSN, streams: recovered.streams, durableRecords: recovered.records)
        self.index = recovered.batches.mapValues { Deque($0) }
        self.durableLSN = recovered.nextLSN
        self.trimLSN = recovered.trimLSN
        self.inlineWriteAfterIdle = configuration.inlineWriteAfterIdle
    }

    /// Opens (and recovers) the WAL in `configuration.directory`; the engine runs on `eventLoop` (default: one
    /// of the process's shared loops, the one the caller runs on if it runs on one).
    public static func open(
        configuration: Configuration, logger: Logger = Logger(label: "floe.wal"), eventLoop: (any EventLoop)? = nil
    ) async throws -> WALEngine {
        guard configuration.segmentSize >= 4096, configuration.maxBufferedBytes > 0, configuration.maxWriteBytes > 0,
              configuration.maxUnsyncedBytes > 0 else {
            throw WALError.unavailable("invalid configuration")
        }
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let volume = WALVolume(
            directory: configuration.directory, segmentSize: configuration.segmentSize, zeroFill: configuration.zeroFillSegments,
            directWrites: configuration.directWrites, logger: logger)
        let recovered: Result<RecoveredState, WALError>
        do {
            recovered = try await pool.runIfActive {
                do throws(WALError) { return .success(try volume.recover()) } catch { return .failure(error) }
            }
        } catch {
            try? await pool.shutdownGracefully()
            throw WALError.unavailable("I/O thread stopped")
        }
        switch recovered {
        case .success(let state):
            logger.info("WAL recovered", metadata: [
                "wal.next_lsn": "\(state.nextLSN)", "wal.trim_lsn": "\(state.trimLSN)",
                "wal.streams": "\(state.streams.count)", "wal.untrimmed_records": "\(state.records.count)",
            ])
            return WALEngine(
                configuration: configuration, logger: logger, volume: volume, pool: pool, recovered: state,
                eventLoop: eventLoop ?? MultiThreadedEventLoopGroup.singleton.any())
        case .failure(let error):
            try? await pool.shutdownGracefully()
            throw error
        }
    }

    /// Stops the I/O thread; pending requests fail.
    public func close() async {
        guard !closed else { return }
        closed = true
        try? await pool.shutdownGracefully()
        volume.shutdown()
    }

    deinit {
        if !closed {
            pool.shutdownGracefully { _ in }
            volume.shutdown()
        }
    }

    /// Appends batches of one stream; returns once they are durable.
    public func append(stream: UInt64, epoch: Int32, baseOffset: Int64, lastOffset: Int64, batches: ByteBuffer) async throws -> DurableAppend {
        let size = WALFormat.encodedSize(batchBytes: batches.readableBytes)
        let id = nextRequest
        nextRequest += 1
        payloads[id] = batches
        let outcome = await submit(id, .append(stream: stream, epoch: epoch, baseOffset: baseOffset, lastOffset: lastOffset, size: size))
        switch outcome {
        case .appended(let lsn): return DurableAppend(lsn: lsn, baseOffset: baseOffset, lastOffset: lastOffset)
        case .failed(let error): throw error
        case .fenced: throw WALError.unavailable("unexpected outcome")
        }
    }

    /// Submits an append and returns at once; checks and ordering are fixed in call order, durability is awaited on the ticket.
    public func enqueueAppend(stream: UInt64, epoch: Int32, baseOffset: Int64, lastOffset: Int64, batches: ByteBuffer) -> AppendTicket {
        let ticket = AppendTicket(baseOffset: baseOffset, lastOffset: lastOffset)
        if closed {
            ticket.complete(.failed(.unavailable("closed")))
            return ticket
        }
        let id = nextRequest
        nextRequest += 1
        payloads[id] = batches
        waiting[id] = (.ticket(ticket), .now)
        let size = WALFormat.encodedSize(batchBytes: batches.readableBytes)
        run(core.step(.submit(id, .append(stream: stream, epoch: epoch, baseOffset: baseOffset, lastOffset: lastOffset, size: size))))
        return ticket
    }

    /// Raises a stream's epoch durably; returns its durable end offset (nil if this WAL never held data of it).
    public func fence(stream: UInt64, epoch: Int32) async throws -> Int64? {
        let id = nextRequest
        nextRequest += 1
        let outcome = await submit(id, .fence(stream: stream, epoch: epoch, size: WALFormat.encodedSize(batchBytes: nil)))
        switch outcome {
        case .fenced(let end): return end
        case .failed(let error): throw error
        case .appended: throw WALError.unavailable("unexpected outcome")
        }
    }

    /// Durable, untrimmed batches from `offset`: whole appends, at least one if any exists, then up to `maxBytes`.
    public func read(stream: UInt64, from offset: Int64, maxBytes: Int) throws -> [ByteBuffer] {
        guard let entries = index[stream], let first = entries.first else {
            if let end = core.streams[stream]?.durableEnd, offset >= end { return [] }
            throw WALError.offsetNotInWAL(stream: stream, offset: offset)
        }
        guard offset >= first.baseOffset else { throw WALError.offsetNotInWAL(stream: stream, offset: offset) }
        // Binary search for the first entry that ends at or after `offset`.
        var low = 0, high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].lastOffset < offset { low = mid + 1 } else { high = mid }
        }
        var result: [ByteBuffer] = []
        var bytes = 0
        while low < entries.count {
            let entry = entries[low]
            if !result.isEmpty, bytes + entry.batches.readableBytes > maxBytes { break }
            result.append(entry.batches)
            bytes += entry.batches.readableBytes
            low += 1
        }
        return result
    }

    /// Durable ranges per stream not yet trimmed.
    public func pendingUpload() -> UploadSnapshot {
        var ranges: [PendingStreamRange] = []
        for stream in index.keys.sorted() {
            guard let entries = index[stream], let first = entries.first, let last = entries.last else { continue }
            ranges.append(PendingStreamRange(
                stream: stream, epoch: entries.map(\.epoch).max() ?? first.epoch,
                baseOffset: first.baseOffset, endOffset: last.lastOffset + 1,
                bytes: entries.reduce(0) { $0 + $1.batches.readableBytes }, batchCount: entries.count,
                firstLSN: first.lsn, lastLSN: last.lsn))
        }
        return UploadSnapshot(upToLSN: durableLSN, streams: ranges)
    }

    /// Durable, untrimmed appends of `stream` whose records lie below `lsn`, in offset order; the uploader needs their offsets.
    public func entries(stream: UInt64, below lsn: LSN) -> [StoredBatch] {
        guard let stored = index[stream] else { return [] }
        return stored.filter { $0.lsn < lsn }
    }

    /// Drops records below `lsn`, which the uploader committed up to `committedEnds`; durable before returning.
    public func trim(upTo lsn: LSN, committedEnds ends: [UInt64: Int64]) async throws {
        guard lsn <= durableLSN else { throw WALError.trimBeyondDurable(requested: lsn, durableEnd: durableLSN) }
        for (stream, end) in ends { committedEnds[stream] = max(committedEnds[stream] ?? end, end) }
        for stream in index.keys.sorted() {
            guard let entries = index[stream] else { continue }
            for entry in entries where entry.lsn < lsn {
                let committed = committedEnds[stream]
                if (committed ?? Int64.min) < entry.lastOffset + 1 {
                    throw WALError.trimUncommitted(stream: stream, committedEnd: committed, needed: entry.lastOffset + 1)
                }
            }
        }
        guard lsn > trimLSN else { return }
        var states: [(UInt64, Int32, Int64?)] = []
        for stream in core.streams.keys.sorted() {
            guard let state = core.streams[stream], state.durableEpoch != Int32.min || state.durableEnd != nil else { continue }
            states.append((stream, state.durableEpoch, state.durableEnd))
        }
        let volume = self.volume
        let checkpoint = states
        let result: Result<Void, WALError>
        ioJobs += 1
        defer { ioJobs -= 1 }
        do {
            result = try await pool.runIfActive {
                do throws(WALError) { try volume.trim(upTo: lsn, streams: checkpoint); return .success(()) } catch { return .failure(error) }
            }
        } catch {
            throw WALError.unavailable("I/O thread stopped")
        }
        if case .failure(let error) = result { throw error }
        guard lsn > trimLSN else { return }
        trimLSN = lsn
        for stream in index.keys.sorted() {
            // In place: a copy of the stream's index would be made on every trim otherwise.
            let trimmed = index[stream]?.prefix(while: { $0.lsn < lsn }).count ?? 0
            if trimmed > 0 { index[stream]?.removeFirst(trimmed) }
            if index[stream]?.isEmpty == true { index[stream] = nil }
        }
        run(core.step(.trimmed(upTo: lsn)))
    }

    /// Current counters.
    public func stats() -> WALStats {
        var s = statistics
        s.durableUntrimmedBytes = core.durableBytes
        s.bufferedBytes = core.bufferedBytes
        s.blockedAppends = core.blockedCount
        return s
    }

    /// Durable state of a stream: (epoch, end offset), nil if unknown.
    public func streamState(_ stream: UInt64) -> (epoch: Int32, durableEnd: Int64?)? {
        guard let s = core.streams[stream], s.durableEpoch != Int32.min || s.durableEnd != nil else { return nil }
        return (s.durableEpoch, s.durableEnd)
    }

    // MARK: Driver

    private func submit(_ id: WALRequestID, _ request: WALBatcher.Request) async -> WALBatcher.Outcome {
        if closed {
            payloads[id] = nil
            return .failed(.unavailable("closed"))
        }
        return await withCheckedContinuation { continuation in
            waiting[id] = (.continuation(continuation), .now)
            run(core.step(.submit(id, request)))
        }
    }

    private func run(_ actions: [WALBatcher.Action]) {
        for action in actions {
            switch action {
            case .answer(let id, let outcome):
                payloads[id] = nil
                guard let (waiter, start) = waiting.removeValue(forKey: id) else { continue }
                if case .appended = outcome { statistics.appendLatency.record(.now - start) }
                switch waiter {
                case .continuation(let continuation): continuation.resume(returning: outcome)
                case .ticket(let ticket): ticket.complete(outcome)
                }
            case .write(let batch, let entries):
                var records: [(record: WALFormat.Record, lsn: LSN)] = []
                records.reserveCapacity(entries.count)
                for entry in entries {
                    switch entry.request {
                    case .append(let stream, let epoch, let base, let last, _):
                        records.append((.append(stream: stream, epoch: epoch, baseOffset: base, lastOffset: last, batches: payloads[entry.id] ?? ByteBuffer()), entry.lsn))
                    case .fence(let stream, let epoch, _):
                        records.append((.fence(stream: stream, epoch: epoch), entry.lsn))
                    }
                }
                let volume = self.volume
                let pool = self.pool
                let written = records
                let start = ContinuousClock.now
                if shouldWriteInline(records, now: start) {
                    let result: Result<Void, WALError>
                    do throws(WALError) {
                        try volume.append(written)
                        result = .success(())
                    } catch {
                        result = .failure(error)
                    }
                    lastWriteEnd = .now
                    writeFinished(batch: batch, records: written, result: result, duration: .now - start)
                    continue
                }
                ioJobs += 1
                Task {
                    let result: Result<Void, WALError>
                    do {
                        result = try await pool.runIfActive {
                            do throws(WALError) { try volume.append(written); return .success(()) } catch { return .failure(error) }
                        }
                    } catch {
                        result = .failure(.unavailable("I/O thread stopped"))
                    }
                    self.ioJobs -= 1
                    self.lastWriteEnd = .now
                    self.writeFinished(batch: batch, records: written, result: result, duration: .now - start)
                }
            }
        }
    }

    /// Whether a write should skip the I/O thread: the WAL has been idle for a while, nothing else uses
    /// the volume, and the write is small.
    private func shouldWriteInline(_ records: [(record: WALFormat.Record, lsn: LSN)], now: ContinuousClock.Instant) -> Bool {
        guard let idle = inlineWriteAfterIdle, ioJobs == 0, !closed else { return false }
        if let last = lastWriteEnd, last.duration(to: now) < idle { return false }
        var bytes = 0
        for (record, _) in records {
            if case .append(_, _, _, _, let batches) = record { bytes += batches.readableBytes }
        }
        return bytes <= Self.maxInlineWriteBytes
    }

    private func writeFinished(batch: UInt64, records: [(record: WALFormat.Record, lsn: LSN)], result: Result<Void, WALError>, duration: Duration) {
        switch result {
        case .success:
            statistics.syncs += 1
            statistics.syncLatency.record(duration)
            for (record, lsn) in records {
                switch record {
                case .append(let stream, let epoch, let base, let last, let bytes):
                    index[stream, default: []].append(StoredBatch(lsn: lsn, epoch: epoch, baseOffset: base, lastOffset: last, batches: bytes))
                    statistics.appends += 1
                    statistics.appendedBytes += UInt64(bytes.readableBytes)
                case .fence:
                    statistics.fences += 1
                }
                durableLSN = lsn + 1
            }
            run(core.step(.writeCompleted(batch: batch)))
        case .failure(let error):
            logger.critical("WAL write failed; refusing further writes", metadata: ["error": "\(error)"])
            run(core.step(.writeFailed(batch: batch, error)))
        }
    }
}
