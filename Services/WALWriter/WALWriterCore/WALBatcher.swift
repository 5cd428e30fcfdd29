import DequeModule

/// Identifies one request to the WAL for the lifetime of an engine.
public typealias WALRequestID = UInt64

/// The group-commit decisions of the WAL as a synchronous state machine.
///
/// It decides which requests are admitted (epoch and offset checks, buffer limits), which
/// admitted requests go into the next write+sync, and whom to answer when a sync completes.
/// One write is in flight at a time, so everything that arrives meanwhile shares the next sync;
/// requests are written and answered in admission order, which per stream is offset order.
/// It performs no I/O, reads no clock and iterates no unordered collection.
public struct WALBatcher: Sendable {
    /// Limits of the batcher.
    public struct Configuration: Sendable {
        /// Bytes admitted but not yet trimmed (waiting, being written, durable awaiting upload).
        public var maxBufferedBytes: Int
        /// Upper bound on the bytes of one group write (at least one request is always taken).
        public var maxWriteBytes: Int
        /// Largest single record.
        public var maxRecordBytes: Int
        /// Bytes admitted but not yet durable (waiting for or in a write).
        public var maxUnsyncedBytes: Int

        public init(maxBufferedBytes: Int, maxWriteBytes: Int, maxRecordBytes: Int, maxUnsyncedBytes: Int = .max) {
            self.maxUnsyncedBytes = maxUnsyncedBytes
            self.maxBufferedBytes = maxBufferedBytes
            self.maxWriteBytes = maxWriteBytes
            self.maxRecordBytes = maxRecordBytes
        }
    }

    /// A request as the batcher sees it (sizes only, no bytes).
    public enum Request: Equatable, Sendable {
        case append(stream: UInt64, epoch: Int32, baseOffset: Int64, lastOffset: Int64, size: Int)
        case fence(stream: UInt64, epoch: Int32, size: Int)

        var size: Int {
            switch self {
            case .append(_, _, _, _, let s), .fence(_, _, let s): s
            }
        }

        var stream: UInt64 {
            switch self {
            case .append(let s, _, _, _, _), .fence(let s, _, _): s
            }
        }
    }

    /// Inputs from the driver.
    public enum Input: Equatable, Sendable {
        case submit(WALRequestID, Request)
        case writeCompleted(batch: UInt64)
        case writeFailed(batch: UInt64, WALError)
        /// Records below this LSN are trimmed (their bytes no longer count).
        case trimmed(upTo: LSN)
    }

    /// One request placed in a write, with its LSN.
    public struct WriteEntry: Equatable, Sendable {
        public var id: WALRequestID
        public var lsn: LSN
        public var request: Request

        public init(id: WALRequestID, lsn: LSN, request: Request) {
            self.id = id
            self.lsn = lsn
            self.request = request
        }
    }

    /// Outcome of a request.
    public enum Outcome: Equatable, Sendable {
        case appended(lsn: LSN)
        case fenced(durableEnd: Int64?)
        case failed(WALError)
    }

    /// Work for the driver.
    public enum Action: Equatable, Sendable {
        /// Write these records in order and sync them, then report `writeCompleted`.
        case write(batch: UInt64, entries: [WriteEntry])
        case answer(WALRequestID, Outcome)
    }

    /// Per-stream state.
    public struct StreamState: Equatable, Sendable {
        /// Highest epoch admitted (appends below it are fenced).
        public var epoch: Int32
        /// End offset of admitted appends (the next expected base offset), nil if none known.
        public var acceptedEnd: Int64?
        /// Highest epoch that is durable.
        public var durableEpoch: Int32
        /// End offset of durable appends, nil if none known.
        public var durableEnd: Int64?

        public init(epoch: Int32, end: Int64?) {
            self.epoch = epoch
            self.acceptedEnd = end
            self.durableEpoch = epoch
            self.durableEnd = end
        }
    }

    /// Limits in force.
    public let configuration: Configuration
    /// Admitted and durable state per stream.
    public private(set) var streams: [UInt64: StreamState]
    /// LSN the next written record gets.
    public private(set) var nextLSN: LSN
    /// Bytes admitted and not yet trimmed.
    public private(set) var bufferedBytes: Int
    /// Bytes durable and not yet trimmed.
    public private(set) var durableBytes: Int
    /// Bytes admitted and not yet durable.
    public private(set) var unsyncedBytes = 0
    /// Set once a write failed; every request is then refused.
    public private(set) var failure: WALError?

    private var blocked: Deque<(WALRequestID, Request)> = []
    private var pending: Deque<(WALRequestID, Request)> = []
    private var inFlight: (batch: UInt64, entries: [WriteEntry])?
    private var nextBatch: UInt64 = 1
    /// Durable, untrimmed records in LSN order, for byte accounting on trim.
    private var durableRecords: Deque<(lsn: LSN, size: Int)> = []
    /// Appends of each stream in submission order with their outcome once known: an answer
    /// leaves only when every earlier append of the stream has been answered, so a refusal
    /// never overtakes an earlier append that is still on its way to disk.
    private var answerOrder: [UInt64: Deque<(id: WALRequestID, outcome: Outcome?)>] = [:]

    /// Starts from recovered state: stream states and the sizes of durable untrimmed records.
    public init(
        configuration: Configuration, nextLSN: LSN, streams: [UInt64: StreamState] = [:],
        durableRecords: [(lsn: LSN, size: Int)] = []
    ) {
        self.configuration = configuration
        self.nextLSN = nextLSN
        self.streams = streams
        self.durableRecords = Deque(durableRecords)
        let total = durableRecords.reduce(0) { $0 + $1.size }
        self.bufferedBytes = total
        self.durableBytes = total
    }

    /// Requests waiting for buffer space.
    public var blockedCount: Int { blocked.count }
    /// Requests admitted and not yet durable.
    public var unsyncedCount: Int { pending.count + (inFlight?.entries.count ?? 0) }
    /// Whether a write is being carried out.
    public var writeInFlight: Bool { inFlight != nil }

    /// Feeds one input and returns what the driver must do, in order.
    public mutating func step(_ input: Input) -> [Action] {
        var actions: [Action] = []
        switch input {
        case .submit(let id, let request):
            if case .append(let stream, _, _, _, _) = request {
                answerOrder[stream, default: []].append((id, nil))
            }
            if let failure {
                answer(id, request, .failed(failure), into: &actions)
                return actions
            }
            let limit = min(configuration.maxRecordBytes, configuration.maxBufferedBytes, configuration.maxUnsyncedBytes)
            if request.size > limit {
                answer(id, request, .failed(.tooLarge(bytes: request.size, limit: limit)), into: &actions)
                return actions
            }
            if case .fence = request {
                // A fence must not wait behind a full upload buffer: leader hand-off depends on it.
                admit(id, request, into: &actions)
            } else {
                blocked.append((id, request))
                admitBlocked(into: &actions)
            }
        case .writeCompleted(let batch):
            guard let flight = inFlight, flight.batch == batch else { return [] }
            inFlight = nil
            for entry in flight.entries {
                durableRecords.append((entry.lsn, entry.request.size))
                durableBytes += entry.request.size
                unsyncedBytes -= entry.request.size
                switch entry.request {
                case .append(let stream, let epoch, _, let last, _):
                    streams[stream]?.durableEnd = last + 1
                    if let e = streams[stream]?.durableEpoch, epoch > e { streams[stream]?.durableEpoch = epoch }
                    answer(entry.id, entry.request, .appended(lsn: entry.lsn), into: &actions)
                case .fence(let stream, let epoch, _):
                    if let e = streams[stream]?.durableEpoch, epoch > e { streams[stream]?.durableEpoch = epoch }
                    answer(entry.id, entry.request, .fenced(durableEnd: streams[stream]?.durableEnd), into: &actions)
                }
            }
            admitBlocked(into: &actions)
        case .writeFailed(let batch, let error):
            guard let flight = inFlight, flight.batch == batch else { return [] }
            inFlight = nil
            failure = error
            for entry in flight.entries { answer(entry.id, entry.request, .failed(error), into: &actions) }
            for (id, request) in pending { answer(id, request, .failed(error), into: &actions) }
            for (id, request) in blocked { answer(id, request, .failed(error), into: &actions) }
            pending.removeAll()
            blocked.removeAll()
            return actions
        case .trimmed(let upTo):
            while let first = durableRecords.first, first.lsn < upTo {
                durableRecords.removeFirst()
                durableBytes -= first.size
                bufferedBytes -= first.size
            }
            admitBlocked(into: &actions)
        }
        scheduleWrite(into: &actions)
        return actions
    }

    private mutating func admitBlocked(into actions: inout [Action]) {
        while let (id, request) = blocked.first {
            if validate(request) == nil {
                let bufferFull = bufferedBytes > 0 && bufferedBytes + request.size > configuration.maxBufferedBytes
                let writesFull = unsyncedBytes > 0 && unsyncedBytes + request.size > configuration.maxUnsyncedBytes
                if bufferFull || writesFull { return }
            }
            blocked.removeFirst()
            admit(id, request, into: &actions)
        }
    }

    private func validate(_ request: Request) -> WALError? {
        switch request {
        case .append(let stream, let epoch, let base, let last, _):
            if base < 0 || last < base || last == Int64.max { return .invalidOffsets(stream: stream, baseOffset: base, lastOffset: last) }
            guard let state = streams[stream] else { return nil }
            if epoch < state.epoch { return .fenced(stream: stream, currentEpoch: state.epoch) }
            if let end = state.acceptedEnd, end != base { return .offsetMismatch(stream: stream, expectedBaseOffset: end) }
            return nil
        case .fence(let stream, let epoch, _):
            if let state = streams[stream], epoch < state.epoch {
                return .fenced(stream: stream, currentEpoch: state.epoch)
            }
            return nil
        }
    }

    private mutating func admit(_ id: WALRequestID, _ request: Request, into actions: inout [Action]) {
        if let error = validate(request) {
            answer(id, request, .failed(error), into: &actions)
            return
        }
        switch request {
        case .append(let stream, let epoch, _, let last, _):
            if var state = streams[stream] {
                state.epoch = max(state.epoch, epoch)
                state.acceptedEnd = last + 1
                streams[stream] = state
            } else {
                var state = StreamState(epoch: epoch, end: nil)
                state.acceptedEnd = last + 1
                state.durableEpoch = Int32.min
                streams[stream] = state
            }
        case .fence(let stream, let epoch, _):
            if var state = streams[stream] {
                state.epoch = max(state.epoch, epoch)
                streams[stream] = state
            } else {
                var state = StreamState(epoch: epoch, end: nil)
                state.durableEpoch = Int32.min
                streams[stream] = state
            }
        }
        bufferedBytes += request.size
        unsyncedBytes += request.size
        pending.append((id, request))
    }

    /// Emits an outcome, holding an append's answer back until earlier appends of its stream are answered.
    private mutating func answer(_ id: WALRequestID, _ request: Request, _ outcome: Outcome, into actions: inout [Action]) {
        guard case .append(let stream, _, _, _, _) = request,
              let index = answerOrder[stream]?.firstIndex(where: { $0.id == id })
        else {
            actions.append(.answer(id, outcome))
            return
        }
        // Mutated in place, not copied out and back, which would copy the stream's queue on every answer.
        answerOrder[stream]?[index].outcome = outcome
        while let head = answerOrder[stream]?.first, let ready = head.outcome {
            answerOrder[stream]?.removeFirst()
            actions.append(.answer(head.id, ready))
        }
        if answerOrder[stream]?.isEmpty == true { answerOrder[stream] = nil }
    }

    private mutating func scheduleWrite(into actions: inout [Action]) {
        guard inFlight == nil, failure == nil, !pending.isEmpty else { return }
        var entries: [WriteEntry] = []
        var bytes = 0
        while let (id, request) = pending.first {
            if !entries.isEmpty, bytes + request.size > configuration.maxWriteBytes { break }
            pending.removeFirst()
            entries.append(WriteEntry(id: id, lsn: nextLSN, request: request))
            nextLSN += 1
            bytes += request.size
        }
        let batch = nextBatch
        nextBatch += 1
        inFlight = (batch, entries)
        actions.append(.write(batch: batch, entries: entries))
    }
}
