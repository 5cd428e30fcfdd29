import ClusterMetadata
import Foundation
import KafkaRecords
import Logging
import NIOCore
import ObjectStorage
import Testing

@testable import BrokerCore
import TestKit

/// What the committed-reader suites share: a reader over a given store.
protocol CommittedReaderSuite {}

extension CommittedReaderSuite {
    var logger: Logger { Logger(label: "test.committed-reader") }

    func reader(_ store: any ObjectStore, _ configuration: CommittedReaderConfiguration = .init()) -> CommittedReader {
        CommittedReader(store: store, configuration: configuration, logger: logger)
    }
}

@Suite(.timeLimit(.minutes(1))) struct CommittedReaderTests: CommittedReaderSuite {
    @Test func segmentsResolveKeysSizesAndOrder() throws {
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 3)
        let stream = fixture.streams[1]
        let all = fixture.segments(stream, from: 0)
        #expect(all.map(\.objectId) == fixture.objects.map(\.id))
        #expect(all.map(\.key) == fixture.objects.map(\.key))
        #expect(all.map(\.objectSize) == fixture.objects.map { Int64($0.bytes.readableBytes) })
        #expect(all.first?.startOffset == 0)
        #expect(all.last?.endOffset == fixture.end(of: stream))
        for (earlier, later) in zip(all, all.dropFirst()) { #expect(earlier.endOffset == later.startOffset) }
        // From inside the second object on, the first object is not needed.
        let second = try #require(all.dropFirst().first)
        #expect(fixture.segments(stream, from: second.startOffset).map(\.objectId) == Array(all.dropFirst().map(\.objectId)))
        #expect(fixture.segments(stream, from: fixture.end(of: stream)).isEmpty)
        #expect(fixture.segments(9999, from: 0).isEmpty)
    }

    @Test func streamObjectsGetTheirOwnKeyKind() async throws {
        var fixture = try CommittedFixture(streamCount: 1, objectCount: 1, batchesPerObject: 3)
        try fixture.addObject(batchesPerObject: 3, blockSize: 600, kind: .stream)
        let stream = fixture.streams[0]
        let segments = fixture.segments(stream, from: 0)
        #expect(segments.map { ObjectKey.parse($0.key)?.kind } == [.streamSet, .stream])
        #expect(segments.map { ObjectKey.parse($0.key)?.id } == fixture.objects.map { UInt64($0.id) })
        let store = InMemoryObjectStore()
        try await fixture.upload(to: store)
        let got = try await reader(store).read(stream: stream, from: 0, maxBytes: 1 << 20, segments: segments)
        #expect(got == fixture.expected(stream, from: 0, maxBytes: 1 << 20))
    }

    @Test func indexLargerThanTheTailReadTakesASecondGet() async throws {
        let fixture = try CommittedFixture(streamCount: 3, objectCount: 2, batchesPerObject: 6, blockSize: 300)
        let store = GatedStore()
        try await fixture.upload(to: store)
        // The tail read holds the footer but not the index.
        let reader = reader(store, CommittedReaderConfiguration(readAheadBlocks: 0, tailReadBytes: ObjectFormat.footerSize))
        let stream = fixture.streams[1]
        let got = try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 0))
        #expect(got == fixture.expected(stream, from: 0, maxBytes: 1 << 20))
        let stats = reader.stats
        #expect(stats.indexMisses == 2)
        #expect(store.gets == 2 * 2 + stats.blockMisses)
    }

    @Test func readsFromEveryOffset() async throws {
        let fixture = try CommittedFixture(streamCount: 3, objectCount: 3, batchesPerObject: 8, blockSize: 600)
        let store = InMemoryObjectStore()
        try await fixture.upload(to: store)
        let reader = reader(store)
        for stream in fixture.streams {
            let end = fixture.end(of: stream)
            for offset in 0...(end + 2) {
                for maxBytes in [1, 700, 1 << 20] {
                    let got = try await reader.read(stream: stream, from: offset, maxBytes: maxBytes, segments: fixture.segments(stream, from: offset))
                    let want = fixture.expected(stream, from: offset, maxBytes: maxBytes)
                    #expect(got == want, "stream \(stream) offset \(offset) maxBytes \(maxBytes): \((try? baseOffsets(got)) ?? []) != \((try? baseOffsets(want)) ?? [])")
                    if offset < end {
                        let first = try #require(try baseOffsets(got).first)
                        let batch = try #require(fixture.batches[stream]?.first { $0.lastOffset >= offset })
                        // The batch holding the offset comes first, whole.
                        #expect(first == batch.baseOffset)
                        #expect(first <= offset)
                    } else {
                        #expect(got.readableBytes == 0)
                    }
                }
            }
        }
    }

    @Test func maxBytesCutsAtWholeBatchesAndAlwaysReturnsOne() async throws {
        let fixture = try CommittedFixture(streamCount: 1, objectCount: 2, batchesPerObject: 10)
        let store = InMemoryObjectStore()
        try await fixture.upload(to: store)
        let reader = reader(store)
        let stream = fixture.streams[0]
        let batches = try #require(fixture.batches[stream])
        // Exactly three batches' worth returns exactly three; one byte less returns two.
        let three = batches[0..<3].reduce(0) { $0 + $1.bytes.readableBytes }
        #expect(try baseOffsets(try await reader.read(stream: stream, from: 0, maxBytes: three, segments: fixture.segments(stream, from: 0)))
            == batches[0..<3].map(\.baseOffset))
        #expect(try baseOffsets(try await reader.read(stream: stream, from: 0, maxBytes: three - 1, segments: fixture.segments(stream, from: 0)))
            == batches[0..<2].map(\.baseOffset))
        // A limit below one batch, or zero, still yields the first batch.
        for limit in [0, 1, batches[0].bytes.readableBytes - 1] {
            let got = try await reader.read(stream: stream, from: 0, maxBytes: limit, segments: fixture.segments(stream, from: 0))
            #expect(got == batches[0].bytes)
        }
    }

    @Test func crossesObjectBoundaries() async throws {
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 3, batchesPerObject: 4)
        let store = InMemoryObjectStore()
        try await fixture.upload(to: store)
        let reader = reader(store)
        let stream = fixture.streams[0]
        let segments = fixture.segments(stream, from: 0)
        #expect(segments.count == 3)
        // From the last batch of the first object, one read runs into the second and third objects.
        let lastOfFirst = segments[0].endOffset - 1
        let got = try await reader.read(stream: stream, from: lastOfFirst, maxBytes: 1 << 20, segments: fixture.segments(stream, from: lastOfFirst))
        let offsets = try baseOffsets(got)
        #expect(offsets.first ?? 0 <= lastOfFirst)
        #expect(offsets.contains { $0 >= segments[1].startOffset && $0 < segments[1].endOffset })
        #expect(offsets.contains { $0 >= segments[2].startOffset })
        #expect(got == fixture.expected(stream, from: lastOfFirst, maxBytes: 1 << 20))
        // Each index is loaded once, by the read or by its read-ahead.
        #expect(reader.stats.indexMisses + reader.stats.indexReadAheadStarted == 3)
    }

    @Test func secondReadIsServedFromTheCache() async throws {
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 2)
        let store = GatedStore()
        try await fixture.upload(to: store)
        let reader = reader(store, CommittedReaderConfiguration(readAheadBlocks: 0))
        let stream = fixture.streams[1]
        let first = try await reader.read(stream: stream, from: 3, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 3))
        let getsAfterFirst = store.gets
        let statsAfterFirst = reader.stats
        #expect(getsAfterFirst == statsAfterFirst.gets)
        #expect(statsAfterFirst.blockMisses > 1)
        #expect(statsAfterFirst.indexMisses == 2)
        let second = try await reader.read(stream: stream, from: 3, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 3))
        #expect(second == first)
        #expect(store.gets == getsAfterFirst)
        let stats = reader.stats
        #expect(stats.blockHits == statsAfterFirst.blockHits + statsAfterFirst.blockMisses)
        #expect(stats.indexHits == statsAfterFirst.indexHits + 2)
        #expect(stats.bytesCached > 0 && stats.bytesCached <= reader.configuration.blockCacheBytes)
    }

    @Test func concurrentColdReadsShareOneGet() async throws {
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 1, batchesPerObject: 3, blockSize: 4096)
        let store = GatedStore()
        try await fixture.upload(to: store)
        let reader = reader(store, CommittedReaderConfiguration(readAheadBlocks: 0))
        let stream = fixture.streams[0]
        let segments = fixture.segments(stream, from: 0)
        let readers = 16
        store.close()
        try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            for _ in 0..<readers {
                group.addTask { try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: segments) }
            }
            // The first reader's index GET waits at the gate; the others must join it.
            await store.waitForBlocked(1)
            #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.indexJoins == readers - 1 })
            store.open()
            var results: [ByteBuffer] = []
            for try await result in group { results.append(result) }
            #expect(results.count == readers)
            #expect(Set(results.map { Array($0.readableBytesView) }).count == 1)
            #expect(results.first == fixture.expected(stream, from: 0, maxBytes: 1 << 20))
        }
        // One GET for the index, one for the stream's only block.
        #expect(store.gets == 2)
        #expect(reader.stats.blockMisses == 1)

        // Same again for a cold block whose index is already cached.
        let other = fixture.streams[1]
        let joinsBefore = reader.stats.blockJoins
        store.close()
        try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            for _ in 0..<readers {
                group.addTask { try await reader.read(stream: other, from: 0, maxBytes: 1 << 20, segments: fixture.segments(other, from: 0)) }
            }
            await store.waitForBlocked(1)
            #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.blockJoins - joinsBefore == readers - 1 })
            store.open()
            for try await result in group { #expect(result == fixture.expected(other, from: 0, maxBytes: 1 << 20)) }
        }
        #expect(store.gets == 3)
    }

    @Test func readAheadMakesTheNextBlocksHits() async throws {
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 1, batchesPerObject: 12, blockSize: 400)
        let store = GatedStore()
        try await fixture.upload(to: store)
        let reader = reader(store, CommittedReaderConfiguration(readAheadBlocks: 2))
        let stream = fixture.streams[0]
        // One batch per read: a consumer walking the stream.
        _ = try await reader.read(stream: stream, from: 0, maxBytes: 1, segments: fixture.segments(stream, from: 0))
        #expect(reader.stats.readAheadStarted == 2)
        #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.blocksCached == 3 && reader.stats.loading == 0 })
        let getsBefore = store.gets
        let missesBefore = reader.stats.blockMisses
        var offset: Int64 = try #require(fixture.batches[stream]?.first?.lastOffset) + 1
        // Walk well past the first three blocks: read-ahead keeps every later block ahead of the reader.
        let end = fixture.end(of: stream)
        var reads = 0
        while offset < end, reads < 100 {
            let got = try await reader.read(stream: stream, from: offset, maxBytes: 1, segments: fixture.segments(stream, from: offset))
            let last = try #require(try RecordBatch.parseRecordSet(got).batches.last?.lastOffset)
            offset = last + 1
            reads += 1
            // Let the background loads finish so each step is a deterministic hit.
            #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.loading == 0 })
        }
        #expect(offset == end)
        #expect(reader.stats.blockMisses == missesBefore)
        #expect(store.gets > getsBefore)  // the read-ahead GETs
        #expect(reader.stats.readAheadStarted > 2)
    }

    @Test func readAheadRunsIntoTheNextObject() async throws {
        // A block or two of each stream per object, as WAL uploads of many streams produce.
        let fixture = try CommittedFixture(streamCount: 3, objectCount: 5, batchesPerObject: 3, blockSize: 400, seed: 5)
        let store = GatedStore()
        try await fixture.upload(to: store)
        let reader = reader(store, CommittedReaderConfiguration(readAheadBlocks: 2))
        let stream = fixture.streams[2]
        let end = fixture.end(of: stream)
        var offset: Int64 = 0
        var reads = 0
        while offset < end, reads < 200 {
            let got = try await reader.read(stream: stream, from: offset, maxBytes: 1, segments: fixture.segments(stream, from: offset))
            #expect(got == fixture.expected(stream, from: offset, maxBytes: 1))
            offset = try #require(try RecordBatch.parseRecordSet(got).batches.last?.lastOffset) + 1
            reads += 1
            #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.loading == 0 })
        }
        #expect(offset == end)
        let stats = reader.stats
        // Only the very first index and block were waited for; every later one was read ahead.
        #expect(stats.indexMisses == 1)
        #expect(stats.blockMisses == 1)
        #expect(stats.indexReadAheadStarted == fixture.objects.count - 1)
        #expect(stats.indexHits > 0)
    }

    @Test func blockCacheStaysWithinItsBoundUnderRandomReads() async throws {
        let fixture = try CommittedFixture(streamCount: 3, objectCount: 4, batchesPerObject: 10, blockSize: 500, seed: 7)
        let store = InMemoryObjectStore()
        try await fixture.upload(to: store)
        let capacity = 3_000
        let reader = reader(store, CommittedReaderConfiguration(blockCacheBytes: capacity, indexCacheEntries: 2, readAheadBlocks: 1, maxConcurrentReads: 3))
        var random = SeededRandom(seed: 42)
        for _ in 0..<60 {
            // Rounds of four concurrent reads at random places.
            var reads: [(StreamID, Int64, Int)] = []
            for _ in 0..<4 {
                let stream = fixture.streams[Int.random(in: 0..<fixture.streams.count, using: &random)]
                let offset = Int64.random(in: 0...fixture.end(of: stream), using: &random)
                reads.append((stream, offset, Int.random(in: 1...2_000, using: &random)))
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (stream, offset, maxBytes) in reads {
                    group.addTask {
                        let got = try await reader.read(stream: stream, from: offset, maxBytes: maxBytes, segments: fixture.segments(stream, from: offset))
                        #expect(got == fixture.expected(stream, from: offset, maxBytes: maxBytes))
                        #expect(reader.stats.bytesCached <= capacity)
                    }
                }
                try await group.waitForAll()
            }
            let stats = reader.stats
            #expect(stats.bytesCached <= capacity)
            #expect(stats.indexesCached <= 2)
        }
        #expect(reader.stats.evictions > 0)
        #expect(reader.stats.maxInFlight <= 3)
    }
}
