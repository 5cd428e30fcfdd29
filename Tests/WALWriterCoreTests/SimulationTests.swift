import NIOCore
import Testing
import WALWriterCore

/// SplitMix64: small, seedable, reproducible.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Drives the batcher against a simulated single-segment disk that loses unsynced writes.
struct WALSimulation {
    static let segmentSize = 1 << 20
    var random: SeededRandom
    var core: WALBatcher
    var durable: [UInt8]
    var writePosition = WALFormat.segmentHeaderSize
    var pendingPayloads: [WALRequestID: (UInt64, Int64, Int64, ByteBuffer)] = [:]
    var inFlight: (batch: UInt64, bytes: [UInt8])?
    var acknowledged: [UInt64: [(Int64, Int64, ByteBuffer)]] = [:]
    var answerOrder: [UInt64: [Int64]] = [:]
    var nextEnd: [UInt64: Int64] = [:]
    var nextID: WALRequestID = 1
    let config = WALBatcher.Configuration(maxBufferedBytes: 1 << 30, maxWriteBytes: 4096, maxRecordBytes: 4096)

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
                guard let (stream, base, last, bytes) = pendingPayloads.removeValue(forKey: id) else { continue }
                if case .appended = outcome {
                    acknowledged[stream, default: []].append((base, last, bytes))
                    answerOrder[stream, default: []].append(base)
                }
            case .write(let batch, let entries):
                var buffer = ByteBuffer()
                for entry in entries {
                    guard case .append(let stream, let epoch, let base, let last, _) = entry.request,
                          let (_, _, _, bytes) = pendingPayloads[entry.id] else { continue }
                    WALFormat.writeRecord(.append(stream: stream, epoch: epoch, baseOffset: base, lastOffset: last, batches: bytes),
                                          lsn: entry.lsn, segment: 1, into: &buffer)
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
        perform(core.step(.submit(id, .append(stream: stream, epoch: 1, baseOffset: base, lastOffset: last, size: size))))
    }

    mutating func completeWrite() {
        guard let (batch, bytes) = inFlight else { return }
        inFlight = nil
        durable.replaceSubrange(writePosition..<(writePosition + bytes.count), with: bytes)
        writePosition += bytes.count
        perform(core.step(.writeCompleted(batch: batch)))
    }

    /// Loses the process: a torn prefix of the unsynced write may reach the disk. Returns false on an invariant violation.
    mutating func crashAndRecover() -> [String] {
        if let (_, bytes) = inFlight {
            let kept = Int.random(in: 0...bytes.count, using: &random)
            durable.replaceSubrange(writePosition..<(writePosition + kept), with: bytes.prefix(kept))
        }
        inFlight = nil
        pendingPayloads.removeAll()
        var state = RecoveredState()
        let result = durable.withUnsafeBytes { WALScanner.scan(segment: $0, sequence: 1, expectedFirstLSN: 0, into: &state) }
        guard let result else { return ["segment header lost"] }
        var violations: [String] = []
        for (stream, acked) in acknowledged {
            let recovered = state.batches[stream] ?? []
            for (base, last, bytes) in acked {
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
        // Erase the cut tail, as the volume does, and carry on from the recovered state.
        for i in result.end..<durable.count { durable[i] = 0 }
        writePosition = result.end
        acknowledged = state.batches.mapValues { $0.map { ($0.baseOffset, $0.lastOffset, $0.batches) } }
        nextEnd = state.streams.compactMapValues { (s: WALBatcher.StreamState) in s.durableEnd }
        core = WALBatcher(configuration: config, nextLSN: result.nextLSN, streams: state.streams)
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
            case 0..<55: sim.submit()
            case 55..<98: sim.completeWrite()
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
        #expect(sim.acknowledged.values.reduce(0) { $0 + $1.count } > 100)
    }
}
