#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NIOCore
import Testing
import WALWriterCore

/// Appends written with O_DIRECT in whole blocks (rewriting the partly written block each time)
/// must leave exactly the bytes buffered writes leave, and survive reopening part-way into a block.
@Suite struct DirectWriteTests {
    /// Not a multiple of 4 KiB, so the last block of a segment is a partial one.
    static let segmentSize = (64 << 10) + 1000

    /// Sizes that end records just before, on and just after block boundaries, and span blocks.
    static func payload(_ index: Int) -> ByteBuffer {
        let sizes = [1, 4000, 4043, 4044, 4045, 100, 8192, 12_345, 0, 3, 6000, 777]
        let size = sizes[index % sizes.count] + index / sizes.count
        var buffer = ByteBuffer()
        for i in 0..<size { buffer.writeInteger(UInt8(truncatingIfNeeded: index &* 37 &+ i)) }
        return buffer
    }

    func config(_ dir: TempDir, direct: Bool) -> WALEngine.Configuration {
        .init(directory: dir.path, segmentSize: Self.segmentSize, directWrites: direct)
    }

    /// Appends `range` one by one to stream 1, each awaited, then closes.
    func appendAwaited(_ dir: TempDir, direct: Bool, _ range: Range<Int>) async throws {
        let wal = try await WALEngine.open(configuration: config(dir, direct: direct), logger: quietLogger)
        for i in range {
            _ = try await wal.append(stream: 1, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: Self.payload(i))
        }
        await wal.close()
    }

    #if os(Linux) && arch(x86_64)
    /// O_DIRECT on Linux x86_64 (Swift's Glibc module does not export it).
    static let oDirect: Int32 = 0o40000

    /// Whether this process holds a descriptor for a segment of `dir` opened with O_DIRECT.
    func holdsDirectDescriptor(_ dir: TempDir) -> Bool {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in fds {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"),
                  target.hasPrefix(dir.path + "/"), target.hasSuffix(".wal"),
                  let info = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8),
                  let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags:") }),
                  let flags = Int(line.dropFirst("flags:".count).trimmingCharacters(in: .whitespaces), radix: 8)
            else { continue }
            if flags & Int(Self.oDirect) != 0 { return true }
        }
        return false
    }

    /// Whether the file system under `dir` opens files with O_DIRECT at all.
    func fileSystemTakesDirectIO(_ dir: TempDir) -> Bool {
        let path = dir.path + "/probe"
        let fd = open(path, O_WRONLY | O_CREAT | Self.oDirect, 0o644)
        defer { unlink(path) }
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }
    #endif

    @Test(arguments: [true, false])
    func segmentImagesMatchBufferedWritesAcrossReopens(direct: Bool) async throws {
        let subject = TempDir()
        let reference = TempDir()
        defer {
            subject.cleanup()
            reference.cleanup()
        }
        // Three sessions, each reopening part-way into a block, so staged tails come from the file.
        for range in [0..<7, 7..<31, 31..<60] {
            try await appendAwaited(subject, direct: direct, range)
            try await appendAwaited(reference, direct: false, range)
        }
        let files = segmentFiles(subject.path)
        #expect(files.count >= 3, "the appends should span several segments")
        #expect(files == segmentFiles(reference.path))
        for file in files {
            let a = try Data(contentsOf: URL(fileURLWithPath: subject.path + "/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: reference.path + "/" + file))
            // Padding may make the direct file longer by part of a block past a non-aligned segment end; it is zeros.
            #expect(a.prefix(b.count) == b, "\(file)")
            #expect(a.dropFirst(b.count).allSatisfy { $0 == 0 }, "\(file)")
        }
        let wal = try await WALEngine.open(configuration: config(subject, direct: direct), logger: quietLogger)
        #expect(try await wal.read(stream: 1, from: 0, maxBytes: 1 << 30) == (0..<60).map(Self.payload))
        _ = try await wal.append(stream: 1, epoch: 1, baseOffset: 60, lastOffset: 60, batches: Self.payload(60))
        #if os(Linux) && arch(x86_64)
        #expect(holdsDirectDescriptor(subject) == (direct && fileSystemTakesDirectIO(subject)))
        #endif
        await wal.close()
    }

    @Test func concurrentGroupWritesSurviveReopenWithDirectWrites() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let streams: [UInt64] = [1, 2, 3, 4]
        let perStream = 40
        for session in 0..<2 {
            let wal = try await WALEngine.open(configuration: config(dir, direct: true), logger: quietLogger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for stream in streams {
                    group.addTask {
                        for i in (session * perStream)..<((session + 1) * perStream) {
                            let payload = Self.payload(i + Int(stream) * 1000)
                            _ = try await wal.append(stream: stream, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: payload)
                        }
                    }
                }
                try await group.waitForAll()
            }
            await wal.close()
        }
        let wal = try await WALEngine.open(configuration: config(dir, direct: true), logger: quietLogger)
        for stream in streams {
            let expected = (0..<(2 * perStream)).map { Self.payload($0 + Int(stream) * 1000) }
            #expect(try await wal.read(stream: stream, from: 0, maxBytes: 1 << 30) == expected, "stream \(stream)")
        }
        await wal.close()
    }
}
