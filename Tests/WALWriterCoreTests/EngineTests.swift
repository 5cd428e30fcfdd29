import Foundation
import NIOCore
import Testing
import WALWriterCore

@Suite struct EngineTests {
    @Test func appendReadFenceTrimHappyPath() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let config = WALEngine.Configuration(directory: dir.path, segmentSize: 64 << 10)
        do {
            let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
            let a = try await wal.append(stream: 7, epoch: 1, baseOffset: 0, lastOffset: 2, batches: bytes("abc"))
            let b = try await wal.append(stream: 7, epoch: 1, baseOffset: 3, lastOffset: 3, batches: bytes("d"))
            #expect(b.lsn == a.lsn + 1)
            #expect(try await wal.read(stream: 7, from: 0, maxBytes: 1 << 20) == [bytes("abc"), bytes("d")])
            #expect(try await wal.read(stream: 7, from: 1, maxBytes: 0) == [bytes("abc")])
            #expect(try await wal.read(stream: 7, from: 3, maxBytes: 0) == [bytes("d")])
            #expect(try await wal.read(stream: 7, from: 4, maxBytes: 10) == [])
            #expect(try await wal.fence(stream: 7, epoch: 2) == 4)
            await #expect(throws: WALError.fenced(stream: 7, currentEpoch: 2)) {
                try await wal.append(stream: 7, epoch: 1, baseOffset: 4, lastOffset: 4, batches: bytes("x"))
            }
            await #expect(throws: WALError.offsetMismatch(stream: 7, expectedBaseOffset: 4)) {
                try await wal.append(stream: 7, epoch: 2, baseOffset: 5, lastOffset: 5, batches: bytes("x"))
            }
            await #expect(throws: WALError.offsetMismatch(stream: 7, expectedBaseOffset: 4)) {
                try await wal.append(stream: 7, epoch: 2, baseOffset: 3, lastOffset: 4, batches: bytes("x"))
            }
            _ = try await wal.append(stream: 7, epoch: 3, baseOffset: 4, lastOffset: 4, batches: bytes("e"))
            _ = try await wal.append(stream: 9, epoch: 1, baseOffset: 100, lastOffset: 101, batches: bytes("zz"))
            let snapshot = await wal.pendingUpload()
            #expect(snapshot.streams.map(\.stream) == [7, 9])
            #expect(snapshot.streams[0].baseOffset == 0 && snapshot.streams[0].endOffset == 5 && snapshot.streams[0].epoch == 3)
            #expect(snapshot.streams[1].baseOffset == 100 && snapshot.streams[1].endOffset == 102)
            // Trimming data that is not reported committed is refused.
            await #expect(throws: WALError.self) { try await wal.trim(upTo: snapshot.upToLSN, committedEnds: [7: 5]) }
            try await wal.trim(upTo: snapshot.upToLSN, committedEnds: [7: 5, 9: 102])
            await #expect(throws: WALError.offsetNotInWAL(stream: 7, offset: 0)) { try await wal.read(stream: 7, from: 0, maxBytes: 10) }
            #expect(await wal.pendingUpload().streams.isEmpty)
            #expect(await wal.stats().durableUntrimmedBytes == 0)
            await wal.close()
        }
        // Fence, epochs and ends survive restart even after everything was trimmed.
        let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
        #expect(await wal.streamState(7)?.epoch == 3)
        #expect(await wal.streamState(7)?.durableEnd == 5)
        await #expect(throws: WALError.fenced(stream: 7, currentEpoch: 3)) {
            try await wal.append(stream: 7, epoch: 2, baseOffset: 5, lastOffset: 5, batches: bytes("x"))
        }
        _ = try await wal.append(stream: 7, epoch: 3, baseOffset: 5, lastOffset: 5, batches: bytes("f"))
        #expect(try await wal.read(stream: 7, from: 5, maxBytes: 10) == [bytes("f")])
        await wal.close()
    }

    @Test func fenceSurvivesRestartWithoutTrim() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let config = WALEngine.Configuration(directory: dir.path, segmentSize: 64 << 10)
        do {
            let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
            _ = try await wal.append(stream: 1, epoch: 4, baseOffset: 10, lastOffset: 19, batches: bytes("ten"))
            #expect(try await wal.fence(stream: 1, epoch: 6) == 20)
            #expect(try await wal.fence(stream: 2, epoch: 1) == nil)
            await wal.close()
        }
        let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
        await #expect(throws: WALError.fenced(stream: 1, currentEpoch: 6)) {
            try await wal.append(stream: 1, epoch: 5, baseOffset: 20, lastOffset: 20, batches: bytes("x"))
        }
        #expect(try await wal.read(stream: 1, from: 10, maxBytes: 100) == [bytes("ten")])
        #expect(await wal.streamState(2)?.epoch == 1)
        await wal.close()
    }

    @Test func oversizedAppendIsRefused() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let wal = try await WALEngine.open(configuration: .init(directory: dir.path, segmentSize: 8192), logger: quietLogger)
        let limit = 8192 - WALFormat.segmentHeaderSize
        await #expect(throws: WALError.tooLarge(bytes: WALFormat.encodedSize(batchBytes: 9000), limit: limit)) {
            try await wal.append(stream: 1, epoch: 0, baseOffset: 0, lastOffset: 0, batches: ByteBuffer(repeating: 1, count: 9000))
        }
        // The largest record that fits a segment is accepted, and the stream carries on.
        let fitting = limit - WALFormat.encodedSize(batchBytes: 0)
        _ = try await wal.append(stream: 1, epoch: 0, baseOffset: 0, lastOffset: 0, batches: ByteBuffer(repeating: 2, count: fitting))
        _ = try await wal.append(stream: 1, epoch: 0, baseOffset: 1, lastOffset: 1, batches: ByteBuffer(repeating: 3, count: fitting))
        #expect(try await wal.read(stream: 1, from: 1, maxBytes: 0) == [ByteBuffer(repeating: 3, count: fitting)])
        await wal.close()
    }
}
