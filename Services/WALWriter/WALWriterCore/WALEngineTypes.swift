import DequeModule
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A submitted append whose durability can be awaited later, so a caller can pipeline
/// several appends of one stream in a fixed order.
public final class AppendTicket: Sendable {
    private enum State {
        case waiting([@Sendable (WALBatcher.Outcome) -> Void])
        case done(WALBatcher.Outcome)
    }

    private let state = NIOLockedValueBox(State.waiting([]))
    /// The append's offsets.
    public let baseOffset: Int64
    public let lastOffset: Int64

    init(baseOffset: Int64, lastOffset: Int64) {
        self.baseOffset = baseOffset
        self.lastOffset = lastOffset
    }

    func complete(_ outcome: WALBatcher.Outcome) {
        let callbacks = state.withLockedValue { state -> [@Sendable (WALBatcher.Outcome) -> Void] in
            guard case .waiting(let callbacks) = state else { return [] }
            state = .done(outcome)
            return callbacks
        }
        for callback in callbacks { callback(outcome) }
    }

    /// Calls `body` with the outcome once the append is durable (or refused): at once if it already is,
    /// else on the thread that completes it (the engine's event loop).
    public func whenComplete(_ body: @escaping @Sendable (Result<DurableAppend, WALError>) -> Void) {
        let baseOffset = baseOffset
        let lastOffset = lastOffset
        let callback: @Sendable (WALBatcher.Outcome) -> Void = { outcome in
            switch outcome {
            case .appended(let lsn): body(.success(DurableAppend(lsn: lsn, baseOffset: baseOffset, lastOffset: lastOffset)))
            case .failed(let error): body(.failure(error))
            case .fenced: body(.failure(WALError.unavailable("unexpected outcome")))
            }
        }
        let done = state.withLockedValue { state -> WALBatcher.Outcome? in
            switch state {
            case .waiting(var callbacks):
                callbacks.append(callback)
                state = .waiting(callbacks)
                return nil
            case .done(let outcome):
                return outcome
            }
        }
        if let done { callback(done) }
    }

    /// Waits until the append is durable (or refused).
    public func result() async throws(WALError) -> DurableAppend {
        try await withCheckedContinuation { (continuation: CheckedContinuation<Result<DurableAppend, WALError>, Never>) in
            whenComplete { continuation.resume(returning: $0) }
        }.get()
    }
}

/// Result of a durable append.
public struct DurableAppend: Sendable, Equatable {
    /// LSN of the WAL record holding the batches.
    public var lsn: LSN
    public var baseOffset: Int64
    public var lastOffset: Int64
}

/// Durable, untrimmed data of one stream, for the uploader.
public struct PendingStreamRange: Sendable, Equatable {
    public var stream: UInt64
    /// Highest epoch among the pending batches.
    public var epoch: Int32
    public var baseOffset: Int64
    /// Exclusive end offset.
    public var endOffset: Int64
    /// Batch bytes pending.
    public var bytes: Int
    /// Appends pending.
    public var batchCount: Int
    /// LSN of the first pending append.
    public var firstLSN: LSN
    /// LSN of the last pending append.
    public var lastLSN: LSN

    public init(stream: UInt64, epoch: Int32, baseOffset: Int64, endOffset: Int64, bytes: Int, batchCount: Int, firstLSN: LSN, lastLSN: LSN) {
        self.stream = stream
        self.epoch = epoch
        self.baseOffset = baseOffset
        self.endOffset = endOffset
        self.bytes = bytes
        self.batchCount = batchCount
        self.firstLSN = firstLSN
        self.lastLSN = lastLSN
    }
}

/// What the uploader should pack next.
public struct UploadSnapshot: Sendable, Equatable {
    /// Trimming up to this LSN releases everything listed (once committed).
    public var upToLSN: LSN
    /// Ranges by ascending stream id.
    public var streams: [PendingStreamRange]
}

/// A latency histogram with fixed bucket bounds.
public struct LatencyHistogram: Sendable, Equatable {
    /// Upper bounds of the buckets in microseconds; the last bucket is unbounded.
    public static let boundsMicros: [Int64] = [50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 250_000]
    /// Counts per bucket (one more than `boundsMicros`).
    public var counts = [UInt64](repeating: 0, count: boundsMicros.count + 1)
    /// Samples recorded.
    public var count: UInt64 = 0
    /// Sum of all samples in microseconds.
    public var sumMicros: Int64 = 0

    mutating func record(_ duration: Duration) {
        let micros = duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
        let index = Self.boundsMicros.firstIndex { micros <= $0 } ?? Self.boundsMicros.count
        counts[index] += 1
        count += 1
        sumMicros += micros
    }

    /// Upper bound (µs) of the bucket holding the given quantile; nil when empty or in the last bucket.
    public func quantileUpperBoundMicros(_ q: Double) -> Int64? {
        guard count > 0 else { return nil }
        let target = UInt64((Double(count) * q).rounded(.up))
        var seen: UInt64 = 0
        for (index, c) in counts.enumerated() {
            seen += c
            if seen >= max(target, 1) { return index < Self.boundsMicros.count ? Self.boundsMicros[index] : nil }
        }
        return nil
    }
}

/// Counters for metrics.
public struct WALStats: Sendable, Equatable {
    /// Durable appends.
    public var appends: UInt64 = 0
    /// Batch bytes of durable appends.
    public var appendedBytes: UInt64 = 0
    /// Durable fences.
    public var fences: UInt64 = 0
    /// Group writes, each ending in one fdatasync.
    public var syncs: UInt64 = 0
    /// From submission to durable answer.
    public var appendLatency = LatencyHistogram()
    /// Of one group write including its fdatasync.
    public var syncLatency = LatencyHistogram()
    /// Bytes durable but not yet trimmed.
    public var durableUntrimmedBytes: Int = 0
    /// Bytes admitted (waiting, in flight or durable) not yet trimmed.
    public var bufferedBytes: Int = 0
    /// Appends waiting for buffer space.
    public var blockedAppends: Int = 0
}
