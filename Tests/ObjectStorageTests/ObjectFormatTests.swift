import Logging
import NIOCore
import ObjectStorage
import TestKit
import Testing

@Suite("Object format")
struct ObjectFormatTests {
    struct Appended: Equatable {
        var stream: UInt64
        var first: Int64
        var end: Int64
        var bytes: ByteBuffer
    }

    /// Interleaved batches of `streams` streams, sized so several blocks per stream appear.
    static func build(streams: Int = 12, batchesPerStream: Int = 20, blockSize: Int = 4_096) throws -> (ByteBuffer, [Appended]) {
        var writer = ObjectWriter(blockSize: blockSize)
        var appended: [Appended] = []
        var next = [Int64](repeating: 0, count: streams)
        for round in 0..<batchesPerStream {
            // Each stream writes a run of batches, then the next stream: runs share blocks.
            for stream in 0..<streams {
                let size = 300 + (round * 37 + stream * 101) % 1_500
                let count = Int64(1 + (round + stream) % 5)
                let bytes = Conformance.bytes(size, seed: UInt8(truncatingIfNeeded: round * 31 + stream))
                try writer.append(
                    streamID: UInt64(1_000 + stream), firstOffset: next[stream], endOffset: next[stream] + count,
                    recordCount: Int32(count), maxTimestamp: Int64(round * 1_000 + stream), batches: bytes
                )
                appended.append(Appended(stream: UInt64(1_000 + stream), first: next[stream], end: next[stream] + count, bytes: bytes))
                next[stream] += count
            }
        }
        return (try writer.finish(), appended)
    }

    /// Reads everything back through the index and checks it against what was appended.
    static func readAll(_ object: ByteBuffer) throws -> [UInt64: ByteBuffer] {
        let index = try ObjectIndex.decode(object: object)
        var byStream: [UInt64: ByteBuffer] = [:]
        for entry in index.entries {
            let block = object.getSlice(at: object.readerIndex + entry.byteRange.lowerBound, length: Int(entry.length))!
            try ObjectIndex.verify(block: block, entry: entry)
            var bytes = byStream[entry.streamID] ?? ByteBuffer()
            bytes.writeImmutableBuffer(block)
            byStream[entry.streamID] = bytes
        }
        return byStream
    }

    @Test func roundTripManyStreamsAndBlocks() throws {
        let (object, appended) = try Self.build()
        let index = try ObjectIndex.decode(object: object)
        #expect(index.entries.count > 12 * 2)
        #expect(index.entries.allSatisfy { $0.length <= 4_096 || $0.recordCount <= 5 })
        for stream in Set(appended.map(\.stream)) {
            let batches = appended.filter { $0.stream == stream }
            let entries = index.entries(stream: stream)
            // Blocks of a stream cover its offsets contiguously and in order.
            #expect(entries.first?.firstOffset == batches.first?.first)
            #expect(entries.last?.endOffset == batches.last?.end)
            for (a, b) in zip(entries, entries.dropFirst()) { #expect(a.endOffset == b.firstOffset) }
            #expect(entries.reduce(0) { $0 + Int($1.recordCount) } == batches.reduce(0) { $0 + Int($1.end - $1.first) })
            var expected = ByteBuffer()
            for batch in batches { expected.writeImmutableBuffer(batch.bytes) }
            #expect(try Self.readAll(object)[stream] == expected)
        }
    }

    @Test func everySingleByteCorruptionIsDetected() throws {
        let (object, _) = try Self.build(streams: 3, batchesPerStream: 4, blockSize: 2_048)
        var undetected: [Int] = []
        for position in 0..<object.readableBytes {
            var corrupted = object
            let byte = corrupted.getInteger(at: position, as: UInt8.self)!
            corrupted.setInteger(byte ^ 0x40, at: position)
            if (try? Self.readAll(corrupted)) != nil { undetected.append(position) }
        }
        #expect(undetected.isEmpty, "corruption at \(undetected.prefix(10)) went unnoticed")
    }

    @Test func truncatedObjectsAreRejected() throws {
        let (object, _) = try Self.build(streams: 2, batchesPerStream: 3)
        for length in [0, 1, 27, 28, 100, object.readableBytes / 2, object.readableBytes - 1] {
            let truncated = object.getSlice(at: 0, length: length)!
            #expect(throws: ObjectStoreError.self) { try Self.readAll(truncated) }
        }
        // Dropping the front keeps the footer but breaks every position in it.
        let headless = object.getSlice(at: 10, length: object.readableBytes - 10)!
        #expect(throws: ObjectStoreError.self) { try Self.readAll(headless) }
    }

    @Test func overlappingIndexEntriesAreRejectedEvenWithAValidChecksum() throws {
        var writer = ObjectWriter(blockSize: 100)
        try writer.append(streamID: 1, firstOffset: 0, endOffset: 1, recordCount: 1, maxTimestamp: 0, batches: Conformance.bytes(100))
        try writer.append(streamID: 1, firstOffset: 1, endOffset: 2, recordCount: 1, maxTimestamp: 0, batches: Conformance.bytes(100))
        var object = try writer.finish()
        // Point the second entry's position at the first block, then re-seal the footer checksum.
        let indexPosition = 200
        let secondPosition = indexPosition + 4 + ObjectFormat.indexEntrySize + 36
        object.setInteger(UInt64(0), at: secondPosition)
        let footer = object.readableBytes - ObjectFormat.footerSize
        var covered = object.getSlice(at: indexPosition, length: footer + 16 - indexPosition)!
        object.setInteger(crc32cForTest(&covered), at: footer + 16)
        let error = #expect(throws: ObjectStoreError.self) { try ObjectIndex.decode(object: object) }
        #expect(error?.description.contains("overlaps") == true, "\(String(describing: error))")
    }

    @Test func writerRejectsOffsetsGoingBackwards() throws {
        var writer = ObjectWriter()
        try writer.append(streamID: 7, firstOffset: 10, endOffset: 20, recordCount: 10, maxTimestamp: 0, batches: Conformance.bytes(10))
        #expect(throws: ObjectWriterError.offsetsOutOfOrder(streamID: 7, firstOffset: 15, previousEnd: 20)) {
            try writer.append(streamID: 7, firstOffset: 15, endOffset: 30, recordCount: 1, maxTimestamp: 0, batches: Conformance.bytes(10))
        }
        #expect(throws: ObjectWriterError.self) {
            try writer.append(streamID: 8, firstOffset: 5, endOffset: 5, recordCount: 0, maxTimestamp: 0, batches: Conformance.bytes(10))
        }
    }

    @Test func readerUsesOneRangedGetForFooterAndIndex() async throws {
        let store = try FileObjectStore(directory: try temporaryDirectory("objectstore"), logger: Logger(label: "t"))
        let (object, appended) = try Self.build()
        let key = ObjectKey.make(id: 42, kind: .streamSet)
        try await store.put(key, object)

        let reader = ObjectReader(store: store)
        let before = store.stats.snapshot
        let index = try await reader.index(key: key, objectSize: object.readableBytes)
        #expect(store.stats.snapshot.rangedGets - before.rangedGets == 1)
        #expect(store.stats.snapshot.requests - before.requests == 1)

        let entry = try #require(index.entries(stream: 1_003).first)
        let block = try await reader.block(key: key, entry: entry)
        #expect(store.stats.snapshot.rangedGets - before.rangedGets == 2)
        #expect(block.getSlice(at: 0, length: appended.first { $0.stream == 1_003 }!.bytes.readableBytes) == appended.first { $0.stream == 1_003 }!.bytes)

        // An index larger than the first guess costs exactly one more GET.
        let small = ObjectReader(store: store, tailRead: 64)
        let again = store.stats.snapshot
        #expect(try await small.index(key: key, objectSize: object.readableBytes) == index)
        #expect(store.stats.snapshot.rangedGets - again.rangedGets == 2)

        // A size that disagrees with the stored object is an error, not a misread.
        await #expect(throws: ObjectStoreError.self) { try await reader.index(key: key, objectSize: object.readableBytes + 5) }
        await #expect(throws: ObjectStoreError.self) { try await reader.index(key: key, objectSize: object.readableBytes - 5) }
    }

    @Test func keysSpreadAndParse() {
        var prefixes = Set<Substring>()
        for id in UInt64(0)..<256 {
            let key = ObjectKey.make(id: id, kind: .stream)
            prefixes.insert(key.prefix(2))
            #expect(ObjectKey.parse(key)?.id == id)
            #expect(ObjectKey.parse(key)?.kind == .stream)
        }
        // Sequential ids spread over most of the 256 two-hex-digit prefixes.
        #expect(prefixes.count > 140)
        #expect(ObjectKey.parse("00000000/ss/0000000000000001") == nil)
        #expect(ObjectKey.parse("garbage") == nil)
    }
}

import CCRC32C

func crc32cForTest(_ buffer: inout ByteBuffer) -> UInt32 {
    buffer.withUnsafeReadableBytes { floe_crc32c(0, $0.baseAddress, $0.count) }
}
