import NIOCore
import Testing
import WALWriterCore
import TestKit

/// Drives the batcher against a simulated single-segment disk that loses unsynced writes.
struct WALSimulation {
    static let segmentSize = 1 << 20
    var random: SeededRandom
    var core: WALBatcher
    var durable: [UInt8]
    var writePosition = WALFormat.segmentHeaderSize
    /// Bytes beyond this were never written.
    var highWater = WALFormat.segmentHeaderSize
    var pendingPayloads: [WALRequestID: (UInt64, Int64, Int64, ByteBuffer)] = [:]
    var inFlight: (batch: UInt64, bytes: [UInt8])?
    var acknowledged: [UInt64: [(Int64, Int64, ByteBuffer, LSN)]] = [:]
    var answerOrder: [UInt64: [Int64]] = [:]
    /// Request ids of every answered append per stream (ids grow with submission order).
    var answeredIDs: [UInt64: [WALRequestID]] = [:]
    var nextEnd: [UInt64: Int64] = [:]
    var nextID: WALRequestID = 1
    /// Epoch the simulated leader of each stream uses; raised by fences.
    var epochs: [UInt64: Int32] = [:]
    var fences: [WALRequestID: (UInt64, Int32)] = [:]
    var ackedFences: [UInt64: Int32] = [:]
    var durableLSN: LSN = 0
    var trimLSN: LSN = 0
    var violations: [String] = []
    var totalAcks = 0
    var fencedRefusals = 0
    var sawBlocked = false
    let config = WALBatcher.Configuration(maxBufferedBytes: 1500, maxWriteBytes: 1024, maxRecordBytes: 1024, maxUnsyncedBytes: 700)

    init(seed: UInt64) {
        random = SeededRandom(seed: seed)
        core = WALBatcher(configuration: config, nextLSN: 0)
        var header = ByteBuffer()
        WALFormat.writeSegmentHeader(into: &header, sequence: 1, firstLSN: 0)
        durable = [UInt8](repeating: 0, count: Self.segmentSize)
        durable.replaceSubrange(0..<header.readableBytes, with: header.readableBytesView)
    }

    mutating func perform(_ actions: [WALBatcher.Action]) {
        for action in actions {
            switch action {
            case .answer(let id, let outcome):
                if let (stream, epoch) = fences.removeValue(forKey: id) {
                    if case .fenced = outcome { ackedFences[stream] = max(ackedFences[stream] ?? epoch, epoch) }
                    continue
                }
                guard let (stream, base, last, bytes) = pendingPayloads.removeValue(forKey: id) else { continue }
                answeredIDs[stream, default: []].append(id)
                if case .failed(.fenced) = outcome { fencedRefusals += 1 }
                if case .appended(let lsn) = outcome {
                    totalAcks += 1
                    acknowledged[stream, default: []].append((base, last, bytes, lsn))
                    answerOrder[stream, default: []].append(base)
                }
            case .write(let batch, let entries):
                var buffer = ByteBuffer()
                for entry in entries {
                    switch entry.request {
                    case .append(let stream, let epoch, let base, let last, _):
                        let bytes = pendingPayloads[entry.id]?.3 ?? ByteBuffer()
                        WALFormat.writeRecord(.append(stream: stream, epoch: epoch, baseOffset: base, lastOffset: last, batches: bytes),
                                              lsn: entry.lsn, segment: 1, into: &buffer)
                    case .fence(let stream, let epoch, _):
                        WALFormat.writeRecord(.fence(stream: stream, epoch: epoch), lsn: entry.lsn, segment: 1, into: &buffer)
                    }
                    durableLSN = entry.lsn + 1
                }
                inFlight = (batch, Array(buffer.readableBytesView))
            }
        }
    }

    mutating func submit() {
        let stream = UInt64.random(in: 1...5, using: &random)
        var base = nextEnd[stream] ?? 0
        // Occasionally a broker sends a wrong offset: it must be refused, never written.
        let wrong = nextEnd[stream] != nil && Int.random(in: 0..<20, using: &random) == 0
        if wrong { base += 3 }
        let last = base + Int64.random(in: 0...3, using: &random)
        var bytes = ByteBuffer()
        for i in 0..<Int.random(in: 1...40, using: &random) { bytes.writeInteger(UInt8(truncatingIfNeeded: Int64(stream) &* 13 &+ base &+ Int64(i))) }
        let id = nextID
        nextID += 1
        pendingPayloads[id] = (stream, base, last, bytes)
        if !wrong { nextEnd[stream] = last + 1 }
        let size = WALFormat.encodedSize(batchBytes: bytes.readableBytes)
        // Sometimes a deposed leader writes with the epoch before the last fence: refused.
        var epoch = epochs[stream] ?? 1
        if Int.random(in: 0..<25, using: &random) == 0 { epoch -= 1 }
        perform(core.step(.submit(id, .append(stream: stream, epoch: epoch, baseOffset: base, lastOffset: last, size: size))))
        checkBounds()
    }

    mutating func fence() {
        let stream = UInt64.random(in: 1...5, using: &random)
        let epoch = (epochs[stream] ?? 1) + 1
        epochs[stream] = epoch
        let id = nextID
        nextID += 1
        fences[id] = (stream, epoch)
        perform(core.step(.submit(id, .fence(stream: stream, epoch: epoch, size: WALFormat.encodedSize(batchBytes: nil)))))
        checkBounds()
    }

    /// The uploader releases a random part of what is durable.
    mutating func trim() {
        guard durableLSN > trimLSN else { return }
        trimLSN = LSN.random(in: (trimLSN + 1)...durableLSN, using: &random)
        perform(core.step(.trimmed(upTo: trimLSN)))
        checkBounds()
    }

    mutating func checkBounds() {
        if core.blockedCount > 0 { sawBlocked = true }
        // Fences bypass the limit by design; appends alone never exceed it.
        if core.bufferedBytes > config.maxBufferedBytes + 64 * WALFormat.encodedSize(batchBytes: nil) {
            violations.append("buffered \(core.bufferedBytes) beyond limit")
        }
    }

    mutating func completeWrite() {
        guard let (batch, bytes) = inFlight else { return }
        inFlight = nil
        durable.replaceSubrange(writePosition..<(writePosition + bytes.count), with: bytes)
        writePosition += bytes.count
        highWater = max(highWater, writePosition)
        perform(core.step(.writeCompleted(batch: batch)))
    }

    /// Loses the process: a torn prefix of the unsynced write may reach the disk. Returns false on an invariant violation.
    mutating func crashAndRecover() -> [String] {
        if let (_, bytes) = inFlight {
            let kept = Int.random(in: 0...bytes.count, using: &random)
            durable.replaceSubrange(writePosition..<(writePosition + kept), with: bytes.prefix(kept))
            highWater = max(highWater, writePosition + kept)
        }
        inFlight = nil
        pendingPayloads.removeAll()
        fences.removeAll()
        var state = RecoveredState()
        state.trimLSN = trimLSN
        let result = durable.withUnsafeBytes { WALScanner.scan(segment: $0, sequence: 1, expectedFirstLSN: 0, into: &state) }
        guard let result else { return ["segment header lost"] }
        var violations = self.violations
        self.violations = []
        for (stream, epoch) in ackedFences where (state.streams[stream]?.epoch ?? Int32.min) < epoch {
            violations.append("stream \(stream): acknowledged fence at epoch \(epoch) lost")
        }
        for (stream, acked) in acknowledged {
            let recovered = state.batches[stream] ?? []
            for (base, last, bytes, lsn) in acked {
                // Trimmed appends are in objects: the WAL only has to remember the stream's end.
                if lsn < trimLSN {
                    if (state.streams[stream]?.durableEnd ?? Int64.min) <= last {
                        violations.append("stream \(stream): end forgot trimmed \(base)...\(last)")
                    }
                    continue
                }
                if !recovered.contains(where: { $0.baseOffset == base && $0.lastOffset == last && $0.batches == bytes }) {
                    violations.append("stream \(stream): acknowledged \(base)...\(last) lost")
                }
            }
        }
        for (stream, batches) in state.batches {
            for (a, b) in zip(batches, batches.dropFirst()) where b.baseOffset != a.lastOffset + 1 {
                violations.append("stream \(stream): \(b.baseOffset) follows \(a.lastOffset)")
            }
        }
        for (stream, order) in answerOrder where order != order.sorted() {
            violations.append("stream \(stream): answers out of offset order")
        }
        for (stream, ids) in answeredIDs where ids != ids.sorted() {
            violations.append("stream \(stream): answers (refusals included) out of submission order")
        }
        // Erase the cut tail, as the volume does, and carry on from the recovered state.
        if result.end < highWater { durable.replaceSubrange(result.end..<highWater, with: repeatElement(0, count: highWater - result.end)) }
        writePosition = result.end
        acknowledged = state.batches.mapValues { $0.map { ($0.baseOffset, $0.lastOffset, $0.batches, $0.lsn) } }
        nextEnd = state.streams.compactMapValues { (s: WALBatcher.StreamState) in s.durableEnd }
        epochs = state.streams.mapValues { (s: WALBatcher.StreamState) in s.epoch }
        durableLSN = result.nextLSN
        core = WALBatcher(configuration: config, nextLSN: result.nextLSN, streams: state.streams, durableRecords: state.records)
        return violations
    }
}

@Suite struct SimulationTests {
    @Test(arguments: [1, 2, 3, 42, 1234, 99999] as [UInt64])
    func crashesNeverLoseAcknowledgedAppends(seed: UInt64) {
        var sim = WALSimulation(seed: seed)
        var crashes = 0
        for _ in 0..<3000 {
            switch Int.random(in: 0..<100, using: &sim.random) {
            case 0..<50: sim.submit()
            case 50..<53: sim.fence()
            case 53..<57: sim.trim()
            case 60..<98: sim.completeWrite()
            default:
                crashes += 1
                let violations = sim.crashAndRecover()
                #expect(violations.isEmpty, "seed \(seed): \(violations.prefix(5))")
                if !violations.isEmpty { return }
            }
        }
        let violations = sim.crashAndRecover()
        #expect(violations.isEmpty, "seed \(seed): \(violations.prefix(5))")
        #expect(crashes > 10)
        #expect(sim.totalAcks > 300)
        #expect(sim.fencedRefusals > 0)
        #expect(!sim.ackedFences.isEmpty)
        #expect(sim.sawBlocked, "backpressure never engaged")
    }
}
