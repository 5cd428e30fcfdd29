import ClusterMetadata
import Foundation
import KafkaRecords
import Logging
import NIOCore
import ObjectStorage
import Testing

@testable import BrokerCore
import TestKit

/// The committed reader when the store fails, objects are damaged or missing, and readers are cancelled.
@Suite(.timeLimit(.minutes(1))) struct CommittedReaderFailureTests: CommittedReaderSuite {
    @Test func failingStoreNeverYieldsWrongDataOrLeaksPermits() async throws {
        let fixture = try CommittedFixture(streamCount: 3, objectCount: 4, batchesPerObject: 6, blockSize: 400, seed: 9)
        let store = FlakyStore(InMemoryObjectStore(), seed: 99)
        try await fixture.upload(to: store)
        let bound = 4
        let reader = reader(store, CommittedReaderConfiguration(blockCacheBytes: 4_000, indexCacheEntries: 2, maxConcurrentReads: bound))
        store.fail(percent: 30)
        var random = SeededRandom(seed: 17)
        var failures = 0
        var successes = 0
        for _ in 0..<40 {
            var reads: [(StreamID, Int64, Int, Bool)] = []
            for _ in 0..<6 {
                let stream = fixture.streams[Int.random(in: 0..<fixture.streams.count, using: &random)]
                let offset = Int64.random(in: 0..<fixture.end(of: stream), using: &random)
                reads.append((stream, offset, Int.random(in: 1...3_000, using: &random), Bool.random(using: &random)))
            }
            let outcomes = await withTaskGroup(of: Bool?.self) { group in
                for (stream, offset, maxBytes, cancel) in reads {
                    let task = Task {
                        try await reader.read(stream: stream, from: offset, maxBytes: maxBytes, segments: fixture.segments(stream, from: offset))
                    }
                    if cancel { task.cancel() }
                    group.addTask {
                        do {
                            let got = try await task.value
                            // Whatever comes back is a prefix of the right answer: whole, correct batches.
                            let want = fixture.expected(stream, from: offset, maxBytes: maxBytes)
                            #expect(got.readableBytes > 0)
                            #expect(got == want.getSlice(at: want.readerIndex, length: min(got.readableBytes, want.readableBytes)))
                            return true
                        } catch is CancellationError {
                            return nil
                        } catch let error as CommittedReadError {
                            guard case .store = error else {
                                Issue.record("unexpected \(error)")
                                return false
                            }
                            return false
                        } catch {
                            Issue.record("unexpected \(error)")
                            return false
                        }
                    }
                }
                var outcomes: [Bool?] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            successes += outcomes.filter { $0 == true }.count
            failures += outcomes.filter { $0 == false }.count
        }
        #expect(successes > 0)
        #expect(failures > 0)
        // Once the background loads settle, every permit is back and nothing is stuck.
        #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.loading == 0 })
        let stats = reader.stats
        #expect(stats.freePermits == bound)
        #expect(stats.inFlight == 0)
        #expect(stats.waitingForPermit == 0)
        #expect(stats.maxInFlight <= bound)
        #expect(stats.bytesCached <= 4_000)
        // With the store healthy again, everything reads back exactly.
        store.fail(percent: 0)
        for stream in fixture.streams {
            let got = try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 0))
            #expect(got == fixture.expected(stream, from: 0, maxBytes: 1 << 20))
        }
    }

    @Test func blockLargerThanTheCacheIsServedButNotCached() async throws {
        let fixture = try CommittedFixture(streamCount: 1, objectCount: 1, batchesPerObject: 6, blockSize: 1 << 20)
        let store = InMemoryObjectStore()
        try await fixture.upload(to: store)
        let reader = reader(store, CommittedReaderConfiguration(blockCacheBytes: 100))
        let stream = fixture.streams[0]
        for _ in 0..<2 {
            let got = try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 0))
            #expect(got == fixture.expected(stream, from: 0, maxBytes: 1 << 20))
        }
        let stats = reader.stats
        #expect(stats.bytesCached == 0)
        #expect(stats.uncacheableBlocks == 2)
        #expect(stats.blockMisses == 2)
    }

    @Test func concurrentGetsNeverExceedTheBound() async throws {
        // Eight objects so that eight reads need eight different cold blocks.
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 8, batchesPerObject: 2, blockSize: 4096)
        let store = GatedStore()
        try await fixture.upload(to: store)
        let bound = 3
        let reader = reader(store, CommittedReaderConfiguration(readAheadBlocks: 0, maxConcurrentReads: bound))
        let stream = fixture.streams[0]
        let segments = fixture.segments(stream, from: 0)
        // Indexes first, so only block GETs are left.
        _ = try await reader.read(stream: fixture.streams[1], from: 0, maxBytes: 1 << 20, segments: fixture.segments(fixture.streams[1], from: 0))
        let base = store.gets
        store.close()
        try await withThrowingTaskGroup(of: (Int, ByteBuffer).self) { group in
            for (position, segment) in segments.enumerated() {
                group.addTask {
                    (position, try await reader.read(stream: stream, from: segment.startOffset, maxBytes: 1, segments: [segment]))
                }
            }
            await store.waitForBlocked(bound)
            #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.waitingForPermit == segments.count - bound })
            // Every permit is taken and the rest queue inside the reader, not at the store.
            #expect(store.blockedCount == bound)
            #expect(reader.stats.inFlight == bound)
            store.open()
            for try await (position, result) in group {
                #expect(result == fixture.expected(stream, from: segments[position].startOffset, maxBytes: 1))
            }
        }
        #expect(store.gets - base == segments.count)
        #expect(store.maxInFlight == bound)
        #expect(reader.stats.maxInFlight == bound)
    }

    @Test func cancelledReaderStopsWaitingAndTheLoadStillLands() async throws {
        let fixture = try CommittedFixture(streamCount: 1, objectCount: 1, batchesPerObject: 3, blockSize: 4096)
        let store = GatedStore()
        try await fixture.upload(to: store)
        let reader = reader(store, CommittedReaderConfiguration(readAheadBlocks: 0))
        let stream = fixture.streams[0]
        let segments = fixture.segments(stream, from: 0)
        store.close()
        let task = Task { try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: segments) }
        await store.waitForBlocked(1)
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        store.open()
        let got = try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: segments)
        #expect(got == fixture.expected(stream, from: 0, maxBytes: 1 << 20))
        // The index load the cancelled reader started was reused.
        #expect(reader.stats.indexMisses == 1)
    }

    @Test func corruptBlockIsAnErrorNotData() async throws {
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 1, batchesPerObject: 4)
        let store = InMemoryObjectStore()
        var object = fixture.objects[0]
        // Flip a byte in the middle of the first block.
        let position = object.bytes.readerIndex + 30
        let byte = try #require(object.bytes.getInteger(at: position, as: UInt8.self))
        object.bytes.setInteger(byte ^ 0xFF, at: position)
        try await store.put(object.key, object.bytes)
        let reader = reader(store)
        let stream = fixture.streams[0]
        let error = await #expect(throws: CommittedReadError.self) {
            try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 0))
        }
        guard case .corrupt(let id, _, let reason)? = error else {
            Issue.record("expected corrupt, got \(String(describing: error))")
            return
        }
        #expect(id == object.id)
        #expect(reason.contains("checksum"))
        // Blocks that are intact still read.
        let other = fixture.streams[1]
        let got = try await reader.read(stream: other, from: 0, maxBytes: 1 << 20, segments: fixture.segments(other, from: 0))
        #expect(got == fixture.expected(other, from: 0, maxBytes: 1 << 20))
    }

    @Test func damagedOrTruncatedObjectsAreCorrupt() async throws {
        let fixture = try CommittedFixture(streamCount: 1, objectCount: 1, batchesPerObject: 4)
        let object = fixture.objects[0]
        let stream = fixture.streams[0]
        let size = object.bytes.readableBytes
        var badFooter = object.bytes
        badFooter.setInteger(UInt8(ascii: "X"), at: badFooter.writerIndex - 1)
        var badIndex = object.bytes
        let indexByte = try #require(badIndex.getInteger(at: badIndex.writerIndex - ObjectFormat.footerSize - 5, as: UInt8.self))
        badIndex.setInteger(indexByte ^ 0x01, at: badIndex.writerIndex - ObjectFormat.footerSize - 5)
        let truncated = try #require(object.bytes.getSlice(at: object.bytes.readerIndex, length: size - 10))
        for damaged in [badFooter, badIndex, truncated] {
            let store = InMemoryObjectStore()
            try await store.put(object.key, damaged)
            let reader = reader(store)
            let error = await #expect(throws: CommittedReadError.self) {
                try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 0))
            }
            guard case .corrupt? = error else {
                Issue.record("expected corrupt, got \(String(describing: error))")
                continue
            }
        }
        // An index that claims a stream range the metadata says is elsewhere.
        let store = InMemoryObjectStore()
        try await store.put(object.key, object.bytes)
        var wrong = try #require(fixture.segments(stream, from: 0).first)
        wrong.startOffset = 10_000
        wrong.endOffset = 10_010
        await #expect(throws: CommittedReadError.self) {
            try await reader(store).read(stream: stream, from: 10_000, maxBytes: 1 << 20, segments: [wrong])
        }
    }

    @Test func missingObjectIsADistinctErrorAndIsNotRemembered() async throws {
        let fixture = try CommittedFixture(streamCount: 1, objectCount: 2, batchesPerObject: 3)
        let store = InMemoryObjectStore()
        try await store.put(fixture.objects[0].key, fixture.objects[0].bytes)
        let reader = reader(store)
        let stream = fixture.streams[0]
        let from = fixture.segments(stream, from: 0)[1].startOffset
        let error = await #expect(throws: CommittedReadError.self) {
            try await reader.read(stream: stream, from: from, maxBytes: 1 << 20, segments: fixture.segments(stream, from: from))
        }
        #expect(error == .objectMissing(objectId: fixture.objects[1].id, key: fixture.objects[1].key))
        // A read that starts in the first object returns that object's batches and stops where the
        // missing one begins; the next read from there gets the error.
        let firstOnly = try await reader.read(stream: stream, from: 0, maxBytes: 1 << 20, segments: fixture.segments(stream, from: 0))
        let firstObjectBatches = try #require(fixture.batches[stream]?.filter { $0.baseOffset < from })
        #expect(try baseOffsets(firstOnly) == firstObjectBatches.map(\.baseOffset))
        // Failures are not cached: once the object is there the same read succeeds.
        try await store.put(fixture.objects[1].key, fixture.objects[1].bytes)
        let got = try await reader.read(stream: stream, from: from, maxBytes: 1 << 20, segments: fixture.segments(stream, from: from))
        #expect(got == fixture.expected(stream, from: from, maxBytes: 1 << 20))
    }

    @Test func readsFromAFileObjectStore() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("floe-objread-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try FileObjectStore(directory: directory, logger: logger)
        let fixture = try CommittedFixture(streamCount: 2, objectCount: 3, batchesPerObject: 6, blockSize: 500, seed: 3)
        try await fixture.upload(to: store)
        let reader = reader(store)
        for stream in fixture.streams {
            for offset in stride(from: Int64(0), through: fixture.end(of: stream), by: 3) {
                for maxBytes in [1, 1 << 20] {
                    let got = try await reader.read(stream: stream, from: offset, maxBytes: maxBytes, segments: fixture.segments(stream, from: offset))
                    #expect(got == fixture.expected(stream, from: offset, maxBytes: maxBytes))
                }
            }
        }
        #expect(await waitUntil(timeout: .seconds(5)) { reader.stats.loading == 0 })
        #expect(store.stats.snapshot.rangedGets == reader.stats.gets)
    }
}
