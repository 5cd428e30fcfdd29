#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOCore
import WALWriterCore

// Crash-test and benchmark companion of WALWriterCoreTests.
//   wal-crash-helper run DIR STREAMS MAX_APPENDS   append concurrently, print "ACK stream base last" per durable append
//   wal-crash-helper bench DIR                      append latency vs raw fdatasync latency on DIR's volume

/// Deterministic content of an append, so the checker can regenerate it.
func payload(stream: UInt64, base: Int64) -> ByteBuffer {
    let length = 64 + Int((stream &* 131 &+ UInt64(base) &* 17) % 900)
    var buffer = ByteBuffer()
    for i in 0..<length { buffer.writeInteger(UInt8(truncatingIfNeeded: stream &* 31 &+ UInt64(base) &* 7 &+ UInt64(i))) }
    return buffer
}

func emit(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress, $0.count) }
}

func runAppenders(directory: String, streams: Int, maxAppends: Int) async throws {
    let engine = try await WALEngine.open(configuration: .init(directory: directory, segmentSize: 256 << 10))
    emit("READY")
    try await withThrowingTaskGroup(of: Void.self) { group in
        for s in 0..<streams {
            group.addTask {
                let stream = UInt64(s + 1)
                var base = await engine.streamState(stream)?.durableEnd ?? 0
                for _ in 0..<(maxAppends / max(streams, 1)) {
                    let last = base + base % 5
                    _ = try await engine.append(stream: stream, epoch: 1, baseOffset: base, lastOffset: last, batches: payload(stream: stream, base: base))
                    emit("ACK \(stream) \(base) \(last)")
                    base = last + 1
                }
            }
        }
        try await group.waitForAll()
    }
    emit("DONE")
    await engine.close()
}

func percentile(_ values: [Double], _ q: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
}

func microseconds(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

func bench(directory: String) async throws {
    let count = 2000
    // Raw: 1 KiB pwrite + fdatasync into a preallocated file on the same volume.
    let path = directory + "/raw-sync.tmp"
    mkdir(directory, 0o755)
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { emit("cannot open \(path)"); return }
    _ = posix_fallocate(fd, 0, off_t(count * 1024 + 4096))
    _ = fsync(fd)
    let block = [UInt8](repeating: 7, count: 1024)
    var raw: [Double] = []
    for i in 0..<count {
        let start = ContinuousClock.now
        _ = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(i * 1024)) }
        _ = fdatasync(fd)
        raw.append(microseconds(.now - start))
    }
    close(fd)
    unlink(path)
    emit(String(format: "raw 1KiB pwrite+fdatasync: n=%d p50=%.0fus p99=%.0fus", count, percentile(raw, 0.5), percentile(raw, 0.99)))

    let engine = try await WALEngine.open(configuration: .init(directory: directory + "/wal", segmentSize: 64 << 20))
    var single: [Double] = []
    let data = ByteBuffer(repeating: 1, count: 1024)
    for i in 0..<count {
        let start = ContinuousClock.now
        _ = try await engine.append(stream: 1, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: data)
        single.append(microseconds(.now - start))
    }
    emit(String(format: "engine 1KiB append, 1 appender: n=%d p50=%.0fus p99=%.0fus", count, percentile(single, 0.5), percentile(single, 0.99)))

    let before = await engine.stats()
    let appenders = 64
    let per = 200
    let start = ContinuousClock.now
    let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
        for s in 0..<appenders {
            group.addTask {
                var out: [Double] = []
                for i in 0..<per {
                    let t = ContinuousClock.now
                    _ = try await engine.append(stream: UInt64(100 + s), epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: data)
                    out.append(microseconds(.now - t))
                }
                return out
            }
        }
        var all: [Double] = []
        for try await part in group { all += part }
        return all
    }
    let elapsed = microseconds(.now - start) / 1e6
    let after = await engine.stats()
    let appends = after.appends - before.appends
    let syncs = after.syncs - before.syncs
    emit(String(format: "engine 1KiB append, %d appenders: n=%d p50=%.0fus p99=%.0fus syncs=%d (%.1f appends/sync) %.0f appends/s %.1f MiB/s",
                appenders, latencies.count, percentile(latencies, 0.5), percentile(latencies, 0.99), Int(syncs),
                Double(appends) / Double(max(syncs, 1)), Double(appends) / elapsed, Double(appends) * 1024 / elapsed / 1048576))
    await engine.close()
}

let arguments = CommandLine.arguments
do {
    if arguments.count == 5, arguments[1] == "run", let streams = Int(arguments[3]), let maxAppends = Int(arguments[4]) {
        try await runAppenders(directory: arguments[2], streams: streams, maxAppends: maxAppends)
    } else if arguments.count == 3, arguments[1] == "bench" {
        try await bench(directory: arguments[2])
    } else {
        emit("usage: wal-crash-helper run DIR STREAMS MAX_APPENDS | bench DIR")
        exit(2)
    }
} catch {
    emit("ERROR \(error)")
    exit(1)
}
