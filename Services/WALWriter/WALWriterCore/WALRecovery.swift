import KafkaRecords
import NIOCore

/// A durable, untrimmed append found by recovery or written since.
public struct StoredBatch: Sendable, Equatable {
    public var lsn: LSN
    public var epoch: Int32
    public var baseOffset: Int64
    public var lastOffset: Int64
    public var batches: ByteBuffer
}

/// What recovery rebuilt from a volume.
public struct RecoveredState: Sendable {
    /// Durable stream states (epoch, end offset).
    public var streams: [UInt64: WALBatcher.StreamState] = [:]
    /// Durable, untrimmed appends per stream in offset order.
    public var batches: [UInt64: [StoredBatch]] = [:]
    /// Sizes of untrimmed records in LSN order (for buffer accounting).
    public var records: [(lsn: LSN, size: Int)] = []
    /// LSN of the next record.
    public var nextLSN: LSN = 0
    /// First LSN still needed.
    public var trimLSN: LSN = 0
    /// Where the log was cut (segment, byte position) when recovery met a bad record.
    public var truncatedAt: (segment: UInt64, position: Int)?

    /// An empty state (nothing recovered yet).
    public init() {}

    /// Applies one valid record (records below the trim point only move state forward).
    mutating func apply(_ record: WALFormat.Record, lsn: LSN, size: Int) {
        switch record {
        case .append(let stream, let epoch, let base, let last, let bytes):
            var state = streams[stream] ?? WALBatcher.StreamState(epoch: epoch, end: nil)
            state.epoch = max(state.epoch, epoch)
            state.durableEpoch = state.epoch
            state.acceptedEnd = max(state.acceptedEnd ?? (last + 1), last + 1)
            state.durableEnd = state.acceptedEnd
            streams[stream] = state
            if lsn >= trimLSN {
                batches[stream, default: []].append(StoredBatch(lsn: lsn, epoch: epoch, baseOffset: base, lastOffset: last, batches: bytes))
            }
        case .fence(let stream, let epoch):
            var state = streams[stream] ?? WALBatcher.StreamState(epoch: epoch, end: nil)
            state.epoch = max(state.epoch, epoch)
            state.durableEpoch = state.epoch
            streams[stream] = state
        }
        if lsn >= trimLSN { records.append((lsn, size)) }
    }
}

/// Scans consecutive segment images, stopping at the first record that is not intact.
public enum WALScanner {
    /// Result of scanning one segment image.
    public struct SegmentResult: Sendable {
        /// Position after the last valid record.
        public var end: Int
        /// LSN expected next.
        public var nextLSN: LSN
    }

    /// Replays the records of one segment image from its header, applying those at or after `startLSN`'s predecessor chain.
    /// Returns nil if the header is invalid or does not match `sequence`/`expectedFirstLSN`.
    public static func scan(
        segment bytes: UnsafeRawBufferPointer, sequence: UInt64, expectedFirstLSN: LSN?,
        into state: inout RecoveredState
    ) -> SegmentResult? {
        guard let header = WALFormat.readSegmentHeader(bytes), header.sequence == sequence else { return nil }
        if let expected = expectedFirstLSN, header.firstLSN != expected { return nil }
        var position = WALFormat.segmentHeaderSize
        var lsn = header.firstLSN
        while case .record(let record, let size) = WALFormat.decodeRecord(bytes, at: position, expectedLSN: lsn, segment: sequence) {
            state.apply(record, lsn: lsn, size: size)
            position += size
            lsn += 1
        }
        return SegmentResult(end: position, nextLSN: lsn)
    }
}
