import Foundation
import NIOCore
import Testing
import WALWriterCore
import TestKit

/// Whether the helper was reaped, so the watchdog never signals a recycled pid.
final class ExitFlag: @unchecked Sendable {
    let lock = NSLock()
    var exited = false
}

/// Runs wal-crash-helper, kills it with SIGKILL after a seeded number of acknowledgements and
/// checks that a fresh engine on the same directory holds every acknowledged append.
@Suite struct CrashTests {
    static var helperPath: String {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        // The test bundle may sit inside a .xctest directory beside the products.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("wal-crash-helper").path), directory.path != "/" {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("wal-crash-helper").path
    }

    /// Reads the helper's stdout on a plain thread until `acks` ACK lines (or EOF), then kills it and drains.
    static func runUntilKilled(directory: String, acks: Int, timeout: TimeInterval) async throws -> (lines: [String], killedEarly: Bool) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: helperPath)
        process.arguments = ["run", directory, "8", "200000"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let handle = pipe.fileHandleForReading
        // A helper that hangs without output would block the reader: a watchdog kills it.
        let reaped = ExitFlag()
        let pid = process.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout + 5) {
            reaped.lock.lock()
            if !reaped.exited { kill(pid, SIGKILL) }
            reaped.lock.unlock()
        }
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var lines: [String] = []
                var partial = Data()
                var acked = 0
                var killed = false
                let deadline = Date().addingTimeInterval(timeout)
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    partial.append(chunk)
                    while let newline = partial.firstIndex(of: 10) {
                        let line = String(decoding: partial[partial.startIndex..<newline], as: UTF8.self)
                        partial.removeSubrange(partial.startIndex...newline)
                        lines.append(line)
                        if line.hasPrefix("ACK") { acked += 1 }
                    }
                    if !killed, acked >= acks || Date() > deadline {
                        kill(process.processIdentifier, SIGKILL)
                        killed = true
                    }
                }
                process.waitUntilExit()
                reaped.lock.lock()
                reaped.exited = true
                reaped.lock.unlock()
                continuation.resume(returning: (lines, killed))
            }
        }
    }

    @Test func sigkillLosesNoAcknowledgedAppend() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.helperPath), "helper at \(Self.helperPath)")
        let dir = TempDir()
        defer { dir.cleanup() }
        var random = SeededRandom(seed: 2024)
        var acknowledged: [UInt64: [(Int64, Int64)]] = [:]
        for round in 0..<8 {
            let target = Int.random(in: 1...1500, using: &random)
            let (lines, killed) = try await Self.runUntilKilled(directory: dir.path, acks: target, timeout: 30)
            #expect(killed, "round \(round): helper exited by itself: \(lines.suffix(3))")
            #expect(!lines.contains { $0.hasPrefix("ERROR") }, "round \(round): \(lines.filter { $0.hasPrefix("ERROR") })")
            for line in lines where line.hasPrefix("ACK") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, let s = UInt64(parts[1]), let b = Int64(parts[2]), let l = Int64(parts[3]) else {
                    Issue.record("bad line \(line)")
                    continue
                }
                acknowledged[s, default: []].append((b, l))
            }
            let wal = try await WALEngine.open(configuration: .init(directory: dir.path, segmentSize: 256 << 10), logger: quietLogger)
            for stream in acknowledged.keys.sorted() {
                let acked = acknowledged[stream] ?? []
                let all = try await wal.read(stream: stream, from: 0, maxBytes: 1 << 30)
                let end = await wal.streamState(stream)?.durableEnd ?? 0
                // Everything recovered is the contiguous sequence the helper would write: 0, then last+1 ...
                var base: Int64 = 0
                var expected: [ByteBuffer] = []
                while base < end {
                    expected.append(helperPayload(stream: stream, base: base))
                    base += base % 5 + 1
                }
                #expect(base == end, "round \(round) stream \(stream): end \(end) is not an append boundary")
                #expect(all == expected, "round \(round) stream \(stream): recovered bytes differ")
                for (b, l) in acked { #expect(l < end, "round \(round) stream \(stream): acknowledged \(b)...\(l) lost (end \(end))") }
            }
            await wal.close()
        }
        #expect(acknowledged.values.reduce(0) { $0 + $1.count } > 100)
    }
}
