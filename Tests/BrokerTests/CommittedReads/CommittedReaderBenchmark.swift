import BrokerCore
import ClusterMetadata
import Foundation
import KafkaRecords
import Logging
import NIOCore
import ObjectStorage
import Testing

/// Throughput of the committed read path. Off by default; run with
/// `FLOE_BENCH_OBJREAD=1 swift test --filter CommittedReaderBenchmark` (use a release build for
/// numbers worth quoting). It measures, and checks only that every byte read is right.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["FLOE_BENCH_OBJREAD"] != nil))
struct CommittedReaderBenchmark {
    /// Adds a fixed delay to each ranged GET, standing in for an object store's first-byte latency.
    final class SlowStore: WrappingStore {
        let inner: any ObjectStore = InMemoryObjectStore()
        let delay: Duration
        init(delay: Duration) { self.delay = delay }
        func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
            // The latency being simulated: the sleep is what the benchmark measures against.
            if delay > .zero { try await Task.sleep(for: delay) }
            return try await inner.get(key, range: range)
        }
    }

    struct Layout {
        var segments: [StreamID: [CommittedSegment]] = [:]
        var bytesPerStream = 0
        var batchBytes = 0
    }

    /// `objects` stream-set objects, each with `bytesPerStreamPerObject` of 16-record batches of
    /// every stream, in 1 MiB blocks; batches are one template re-stamped with their base offset.
    static func build(store: some ObjectStore, streams: Int, objects: Int, bytesPerStreamPerObject: Int) async throws -> Layout {
        var builder = RecordBatchBuilder(partitionLeaderEpoch: 0)
        var value = ByteBufferAllocator().buffer(capacity: 1024)
        value.writeRepeatingByte(0x61, count: 1024)
        for record in 0..<16 { try builder.append(timestamp: 1_700_000_000_000 + Int64(record), key: nil, value: value) }
        let template = try builder.build()
        var layout = Layout(batchBytes: template.sizeInBytes)
        let batchesPerObject = max(1, bytesPerStreamPerObject / template.sizeInBytes)
        var next = [Int64](repeating: 0, count: streams)
        for object in 0..<objects {
            let id = ObjectID(object + 1)
            var writer = ObjectWriter(blockSize: 1 << 20)
            var ranges: [(StreamID, Int64, Int64)] = []
            for stream in 0..<streams {
                let start = next[stream]
                for _ in 0..<batchesPerObject {
                    var batch = template.bytes
                    batch.setInteger(next[stream], at: batch.readerIndex)
                    try writer.append(
                        streamID: UInt64(stream + 1), firstOffset: next[stream], endOffset: next[stream] + 16, recordCount: 16,
                        maxTimestamp: template.maxTimestamp, batches: batch)
                    next[stream] += 16
                }
                ranges.append((StreamID(stream + 1), start, next[stream]))
            }
            let bytes = try writer.finish()
            let key = ObjectKey.make(id: UInt64(id), kind: .streamSet)
            try await store.put(key, bytes)
            for (stream, start, end) in ranges {
                layout.segments[stream, default: []].append(CommittedSegment(
                    objectId: id, key: key, objectSize: Int64(bytes.readableBytes), startOffset: start, endOffset: end))
            }
        }
        layout.bytesPerStream = objects * batchesPerObject * template.sizeInBytes
        return layout
    }

    /// Reads a stream from offset 0 to its end in `maxBytes` steps; returns the bytes read.
    static func scan(_ reader: CommittedReader, stream: StreamID, layout: Layout, maxBytes: Int) async throws -> Int {
        let segments = layout.segments[stream] ?? []
        let end = segments.last?.endOffset ?? 0
        var offset: Int64 = 0
        var bytes = 0
        var reads = 0
        while offset < end, reads < 100_000 {
            let got = try await reader.read(
                stream: stream, from: offset, maxBytes: maxBytes, segments: segments.filter { $0.endOffset > offset })
            var iterator = RecordSetIterator(got)
            var last = offset - 1
            while let batch = try iterator.next() {
                #expect(batch.baseOffset == last + 1)
                last = batch.lastOffset
            }
            bytes += got.readableBytes
            offset = last + 1
            reads += 1
        }
        #expect(offset == end)
        return bytes
    }

    static func rate(_ bytes: Int, _ elapsed: Duration) -> String {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return String(format: "%.1f MiB/s (%.3f s)", Double(bytes) / 1_048_576 / max(seconds, 1e-9), seconds)
    }

    @Test func sequentialAndConcurrentScans() async throws {
        let logger = Logger(label: "bench.committed-reader")
        let streams = 16
        let delay = Duration.milliseconds(2)
        print("committed read benchmark: \(streams) streams x 4 objects x 2 MiB, 1 MiB blocks, 16 KiB batches, GET delay \(delay), fetch maxBytes 1 MiB")
        let store = SlowStore(delay: delay)
        let layout = try await Self.build(store: store, streams: streams, objects: 4, bytesPerStreamPerObject: 2 << 20)
        let clock = ContinuousClock()
        for readAhead in [0, 2] {
            let reader = CommittedReader(store: store, configuration: CommittedReaderConfiguration(readAheadBlocks: readAhead), logger: logger)
            var bytes = 0
            let cold = try await clock.measure { bytes = try await Self.scan(reader, stream: 1, layout: layout, maxBytes: 1 << 20) }
            let warm = try await clock.measure { bytes = try await Self.scan(reader, stream: 1, layout: layout, maxBytes: 1 << 20) }
            print("  one consumer, readAhead \(readAhead): cold \(Self.rate(bytes, cold)), warm \(Self.rate(bytes, warm)), gets \(reader.stats.gets)")
        }
        for permits in [4, 16] {
            let reader = CommittedReader(
                store: store, configuration: CommittedReaderConfiguration(readAheadBlocks: 2, maxConcurrentReads: permits), logger: logger)
            var total = 0
            let elapsed = try await clock.measure {
                total = try await withThrowingTaskGroup(of: Int.self) { group in
                    for stream in 1...streams {
                        group.addTask { try await Self.scan(reader, stream: StreamID(stream), layout: layout, maxBytes: 1 << 20) }
                    }
                    return try await group.reduce(0, +)
                }
            }
            let stats = reader.stats
            print("  \(streams) consumers, maxConcurrentReads \(permits): cold \(Self.rate(total, elapsed)), gets \(stats.gets), max in flight \(stats.maxInFlight), read-ahead started \(stats.readAheadStarted), skipped \(stats.readAheadSkipped)")
        }
    }
}
