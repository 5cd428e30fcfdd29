import Foundation
import NIOCore
import Testing
import WALWriterCore
import TestKit

@Suite struct RecoveryTests {
    static let segmentSize = 64 << 10

    func config(_ dir: TempDir) -> WALEngine.Configuration {
        .init(directory: dir.path, segmentSize: Self.segmentSize)
    }

    /// Writes `count` single-offset appends to stream 1 and returns each record's byte range in the first segment.
    func populate(_ dir: TempDir, count: Int) async throws -> [Range<Int>] {
        let wal = try await WALEngine.open(configuration: config(dir), logger: quietLogger)
        var ranges: [Range<Int>] = []
        var position = WALFormat.segmentHeaderSize
        for i in 0..<count {
            let payload = bytes("record-\(i)")
            _ = try await wal.append(stream: 1, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: payload)
            let size = WALFormat.encodedSize(batchBytes: payload.readableBytes)
            ranges.append(position..<(position + size))
            position += size
        }
        await wal.close()
        return ranges
    }

    func segmentPath(_ dir: TempDir) throws -> String {
        let files = segmentFiles(dir.path)
        try #require(files.count == 1)
        return dir.path + "/" + files[0]
    }

    /// Reopens, checks exactly offsets 0..<expected survive, appends the next one and checks it survives another restart.
    func expectRecovered(_ dir: TempDir, count expected: Int, comment: String = "") async throws {
        let wal = try await WALEngine.open(configuration: config(dir), logger: quietLogger)
        #expect(await wal.streamState(1)?.durableEnd == (expected == 0 ? nil : Int64(expected)), "\(comment)")
        if expected > 0 {
            let all = try await wal.read(stream: 1, from: 0, maxBytes: 1 << 20)
            #expect(all == (0..<expected).map { bytes("record-\($0)") }, "\(comment)")
        }
        _ = try await wal.append(stream: 1, epoch: 1, baseOffset: Int64(expected), lastOffset: Int64(expected), batches: bytes("after"))
        await wal.close()
        let again = try await WALEngine.open(configuration: config(dir), logger: quietLogger)
        let tail = try await again.read(stream: 1, from: Int64(expected), maxBytes: 1 << 20)
        #expect(tail == [bytes("after")], "\(comment)")
        #expect(await again.streamState(1)?.durableEnd == Int64(expected + 1), "\(comment)")
        await again.close()
    }

    @Test func tornTailAtEveryBytePosition() async throws {
        let source = TempDir()
        defer { source.cleanup() }
        let ranges = try await populate(source, count: 3)
        let last = ranges[2]
        let original = try Data(contentsOf: URL(fileURLWithPath: try segmentPath(source)))
        for cut in last.lowerBound..<last.upperBound {
            let dir = TempDir()
            defer { dir.cleanup() }
            // A torn write: the file ends (or turns to zeros) part-way through the last record.
            var image = original
            if cut % 2 == 0 {
                image = image.prefix(cut)
            } else {
                image.replaceSubrange(cut..<image.count, with: Data(count: image.count - cut))
            }
            try image.write(to: URL(fileURLWithPath: dir.path + "/" + segmentFiles(source.path)[0]))
            try await expectRecovered(dir, count: 2, comment: "cut at \(cut)")
        }
    }

    @Test func corruptByteInTheMiddleStopsReplay() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let ranges = try await populate(dir, count: 6)
        let path = try segmentPath(dir)
        var image = try Data(contentsOf: URL(fileURLWithPath: path))
        image[ranges[2].lowerBound + 20] ^= 0x40
        try image.write(to: URL(fileURLWithPath: path))
        // Records 3, 4 and 5 are intact on disk but come after the bad one: never replayed.
        try await expectRecovered(dir, count: 2)
    }

    @Test func garbageAfterValidTailIsIgnored() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let ranges = try await populate(dir, count: 4)
        let path = try segmentPath(dir)
        var image = try Data(contentsOf: URL(fileURLWithPath: path))
        var random = SeededRandom(seed: 7)
        for i in ranges[3].upperBound..<(ranges[3].upperBound + 5000) { image[i] = UInt8.random(in: 0...255, using: &random) }
        try image.write(to: URL(fileURLWithPath: path))
        try await expectRecovered(dir, count: 4)
    }

    @Test func zeroedPreallocatedSpaceEndsTheLog() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        _ = try await populate(dir, count: 5)
        let size = try FileManager.default.attributesOfItem(atPath: try segmentPath(dir))[.size] as? Int
        #expect(size == Self.segmentSize)
        try await expectRecovered(dir, count: 5)
    }

    @Test func staleRecordsAfterACutNeverReappear() async throws {
        // Cut in the middle, append records of a different size, crash again: the old records
        // after the cut were erased, so none can be mistaken for a continuation.
        let dir = TempDir()
        defer { dir.cleanup() }
        let ranges = try await populate(dir, count: 8)
        let path = try segmentPath(dir)
        var image = try Data(contentsOf: URL(fileURLWithPath: path))
        image[ranges[1].lowerBound] = 0xFF
        try image.write(to: URL(fileURLWithPath: path))
        let wal = try await WALEngine.open(configuration: config(dir), logger: quietLogger)
        #expect(await wal.streamState(1)?.durableEnd == 1)
        _ = try await wal.append(stream: 1, epoch: 1, baseOffset: 1, lastOffset: 1, batches: bytes("record-1"))
        await wal.close()
        let again = try await WALEngine.open(configuration: config(dir), logger: quietLogger)
        #expect(await again.streamState(1)?.durableEnd == 2)
        await again.close()
    }

    @Test func trimPointHonouredAndOldSegmentsDeleted() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let config = WALEngine.Configuration(directory: dir.path, segmentSize: 4096)
        let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
        var lsns: [LSN] = []
        for i in 0..<200 {
            let result = try await wal.append(stream: 3, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: bytes(String(repeating: "x", count: 100) + "\(i)"))
            lsns.append(result.lsn)
        }
        let before = segmentFiles(dir.path).count
        #expect(before > 5)
        try await wal.trim(upTo: lsns[150], committedEnds: [3: 150])
        let after = segmentFiles(dir.path).count
        #expect(after < before)
        #expect(after <= 3)
        await wal.close()
        let reopened = try await WALEngine.open(configuration: config, logger: quietLogger)
        await #expect(throws: WALError.offsetNotInWAL(stream: 3, offset: 100)) { try await reopened.read(stream: 3, from: 100, maxBytes: 1) }
        let first = try await reopened.read(stream: 3, from: 150, maxBytes: 0)
        #expect(first == [bytes(String(repeating: "x", count: 100) + "150")])
        let snapshot = await reopened.pendingUpload()
        #expect(snapshot.streams == [PendingStreamRange(stream: 3, epoch: 1, baseOffset: 150, endOffset: 200, bytes: snapshot.streams.first?.bytes ?? 0, batchCount: 50, firstLSN: lsns[150], lastLSN: lsns[199])])
        #expect(await reopened.streamState(3)?.durableEnd == 200)
        await reopened.close()
    }

    @Test func recycledSegmentsNeverReplayStaleRecords() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let config = WALEngine.Configuration(directory: dir.path, segmentSize: 4096)
        let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
        func payload(_ offset: Int64) -> ByteBuffer { bytes(String(repeating: "p", count: 150) + "-\(offset)") }
        var next: Int64 = 0
        var sawRecycled = false
        // Fill several segments per round and trim all but the newest record, so trimmed segments
        // come back as spares still full of records.
        for _ in 0..<8 {
            var last: LSN = 0
            for _ in 0..<60 {
                last = try await wal.append(stream: 5, epoch: 1, baseOffset: next, lastOffset: next, batches: payload(next)).lsn
                next += 1
            }
            try await wal.trim(upTo: last, committedEnds: [5: next - 1])
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
            if names.contains(where: { $0.hasPrefix("recycled-") }) { sawRecycled = true }
        }
        #expect(sawRecycled, "trimmed segments should be kept for reuse")
        // A few short records at the start of a segment that held longer records before.
        let tailStart = next
        for _ in 0..<3 {
            _ = try await wal.append(stream: 5, epoch: 1, baseOffset: next, lastOffset: next, batches: bytes("tail-\(next)"))
            next += 1
        }
        await wal.close()
        let reopened = try await WALEngine.open(configuration: config, logger: quietLogger)
        #expect(await reopened.streamState(5)?.durableEnd == next)
        let tail = try await reopened.read(stream: 5, from: tailStart, maxBytes: 1 << 20)
        #expect(tail == (tailStart..<next).map { bytes("tail-\($0)") })
        _ = try await reopened.append(stream: 5, epoch: 1, baseOffset: next, lastOffset: next, batches: bytes("after"))
        await reopened.close()
        let again = try await WALEngine.open(configuration: config, logger: quietLogger)
        #expect(await again.streamState(5)?.durableEnd == next + 1)
        #expect(try await again.read(stream: 5, from: next, maxBytes: 1 << 20) == [bytes("after")])
        await again.close()
    }

    @Test func damagedSegmentHeaderRefusesToOpen() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        _ = try await populate(dir, count: 3)
        let path = try segmentPath(dir)
        var image = try Data(contentsOf: URL(fileURLWithPath: path))
        image[5] ^= 1
        try image.write(to: URL(fileURLWithPath: path))
        await #expect(throws: WALError.corruptVolume("segment 1 has an invalid header")) {
            _ = try await WALEngine.open(configuration: config(dir), logger: quietLogger)
        }
        // The data was left in place for inspection.
        #expect(segmentFiles(dir.path).count == 1)
    }

    @Test func smallerSegmentSizeOnRestartKeepsEverything() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        _ = try await populate(dir, count: 5)
        let smaller = WALEngine.Configuration(directory: dir.path, segmentSize: 8192)
        do {
            let wal = try await WALEngine.open(configuration: smaller, logger: quietLogger)
            #expect(try await wal.read(stream: 1, from: 0, maxBytes: 1 << 20).count == 5)
            for i in 5..<300 {
                _ = try await wal.append(stream: 1, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: bytes("record-\(i)"))
            }
            await wal.close()
        }
        #expect(segmentFiles(dir.path).count > 1)
        let wal = try await WALEngine.open(configuration: smaller, logger: quietLogger)
        #expect(try await wal.read(stream: 1, from: 0, maxBytes: 1 << 20) == (0..<300).map { bytes("record-\($0)") })
        await wal.close()
    }

    @Test func checkpointWithManyStreamsOnSmallSegments() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let config = WALEngine.Configuration(directory: dir.path, segmentSize: 4096)
        do {
            let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
            var ends: [UInt64: Int64] = [:]
            for stream in 0..<500 as Range<UInt64> {
                _ = try await wal.append(stream: stream, epoch: 2, baseOffset: 10, lastOffset: 11, batches: bytes("s"))
                ends[stream] = 12
            }
            let snapshot = await wal.pendingUpload()
            try await wal.trim(upTo: snapshot.upToLSN, committedEnds: ends)
            await wal.close()
        }
        // The checkpoint (500 streams, larger than a segment) restores every stream's epoch and end.
        let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
        for stream in [0, 250, 499] as [UInt64] {
            #expect(await wal.streamState(stream)?.epoch == 2)
            #expect(await wal.streamState(stream)?.durableEnd == 12)
        }
        await wal.close()
    }
}
