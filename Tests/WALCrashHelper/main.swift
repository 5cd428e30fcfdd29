#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Logging
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
    var logger = Logger(label: "wal-crash-helper")
    logger.logLevel = .warning
    let engine = try await WALEngine.open(configuration: .init(directory: directory, segmentSize: 256 << 10), logger: logger)
    emit("READY")
    try await withThrowingTaskGroup(of: Void.self) { group in
        for s in 0..<streams {
            group.addTask {
                let stream = UInt64(s + 1)
                var base = await engine.streamState(stream)?.durableEnd ?? 0
                // Odd streams await each append; even ones keep up to four in flight, like a producer pipelining.
                let depth = stream % 2 == 0 ? 4 : 1
                var inFlight: [AppendTicket] = []
                for _ in 0..<(maxAppends / max(streams, 1)) {
                    let last = base + base % 5
                    inFlight.append(await engine.enqueueAppend(stream: stream, epoch: 1, baseOffset: base, lastOffset: last, batches: payload(stream: stream, base: base)))
                    base = last + 1
                    if inFlight.count >= depth {
                        let done = try await inFlight.removeFirst().result()
                        emit("ACK \(stream) \(done.baseOffset) \(done.lastOffset)")
                    }
                }
                for ticket in inFlight {
                    let done = try await ticket.result()
                    emit("ACK \(stream) \(done.baseOffset) \(done.lastOffset)")
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

/// Latency of 4 KiB sequential writes each made durable, on a preallocated file.
func rawSync(path: String, count: Int, zeroFill: Bool, direct: Bool) -> [Double] {
    let size = count * 4096 + 4096
    var fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { return [] }
    if zeroFill {
        let zeros = [UInt8](repeating: 0, count: size)
        _ = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    } else {
        _ = posix_fallocate(fd, 0, off_t(size))
    }
    _ = fsync(fd)
    if direct {
        close(fd)
        // O_DIRECT (0o40000 on Linux x86_64 and arm64) is not exported by the Glibc module.
        fd = open(path, O_RDWR | 0o40000 | O_DSYNC)
        guard fd >= 0 else { return [] }
    }
    defer { close(fd); unlink(path) }
    guard let block = UnsafeMutableRawBufferPointer.allocateAligned(4096) else { return [] }
    defer { block.deallocate() }
    var latencies: [Double] = []
    for i in 0..<count {
        let start = ContinuousClock.now
        guard pwrite(fd, block.baseAddress, 4096, off_t(i * 4096)) == 4096 else { return latencies }
        if !direct { _ = fdatasync(fd) }
        latencies.append(microseconds(.now - start))
    }
    return latencies
}

extension UnsafeMutableRawBufferPointer {
    static func allocateAligned(_ size: Int) -> UnsafeMutableRawBufferPointer? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 7)
        return buffer
    }
}

func bench(directory: String) async throws {
    let count = 2000
    mkdir(directory, 0o755)
    for mode in ["fallocate", "zero-filled", "zero-filled O_DIRECT|O_DSYNC"] {
        let latencies = rawSync(path: directory + "/raw-sync.tmp", count: count, zeroFill: mode != "fallocate", direct: mode.hasSuffix("O_DSYNC"))
        emit("raw 4KiB pwrite+sync (\(mode)): " + String(format: "n=%d p50=%.0fus p99=%.0fus", latencies.count, percentile(latencies, 0.5), percentile(latencies, 0.99)))
    }

    var logger = Logger(label: "wal-bench")
    logger.logLevel = .warning
    // Light load: one append every 10 ms, alternating between a direct-write and a buffered engine.
    let paced = [true, false]
    var engines: [WALEngine] = []
    for direct in paced {
        engines.append(try await WALEngine.open(
            configuration: .init(directory: directory + "/wal-paced-\(direct)", segmentSize: 64 << 20, directWrites: direct), logger: logger))
    }
    var pacedLatencies: [[Double]] = paced.map { _ in [] }
    let data = ByteBuffer(repeating: 1, count: 1024)
    for i in 0..<300 {
        for (index, engine) in engines.enumerated() {
            try await Task.sleep(for: .milliseconds(10))
            let start = ContinuousClock.now
            _ = try await engine.append(stream: 1, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: data)
            pacedLatencies[index].append(microseconds(.now - start))
        }
    }
    for (index, direct) in paced.enumerated() {
        await engines[index].close()
        let latencies = pacedLatencies[index]
        // p90, not p99: the first appends share the disk with both engines zero-filling their spare segments.
        emit(String(format: "engine 1KiB append every 10 ms, %@: n=%d p50=%.0fus p90=%.0fus", direct ? "direct writes" : "page cache",
                    latencies.count, percentile(latencies, 0.5), percentile(latencies, 0.9)))
    }
    for direct in [true, false] {
        try await engineBench(directory: directory + "/wal-\(direct)", direct: direct, count: count, logger: logger)
    }
}

/// Back-to-back appends from one appender, then from 64 at once, on one engine.
func engineBench(directory: String, direct: Bool, count: Int, logger: Logger) async throws {
    let mode = direct ? "direct writes" : "page cache"
    let engine = try await WALEngine.open(
        configuration: .init(directory: directory, segmentSize: 64 << 20, directWrites: direct), logger: logger)
    var single: [Double] = []
    let data = ByteBuffer(repeating: 1, count: 1024)
    for i in 0..<count {
        let start = ContinuousClock.now
        _ = try await engine.append(stream: 1, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: data)
        single.append(microseconds(.now - start))
    }
    emit(String(format: "engine 1KiB append, 1 appender, %@: n=%d p50=%.0fus p99=%.0fus", mode, count, percentile(single, 0.5), percentile(single, 0.99)))
    let histogram = await engine.stats().syncLatency
    emit("engine write+fdatasync histogram, \(mode): n=\(histogram.count) mean=\(histogram.sumMicros / Int64(max(histogram.count, 1)))us p50<=\(histogram.quantileUpperBoundMicros(0.5).map(String.init) ?? "inf")us p99<=\(histogram.quantileUpperBoundMicros(0.99).map(String.init) ?? "inf")us")

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
    emit(String(format: "engine 1KiB append, %d appenders, %@: n=%d p50=%.0fus p99=%.0fus syncs=%d (%.1f appends/sync) %.0f appends/s %.1f MiB/s",
                appenders, mode, latencies.count, percentile(latencies, 0.5), percentile(latencies, 0.99), Int(syncs),
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
