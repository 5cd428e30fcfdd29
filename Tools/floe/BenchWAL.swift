import ArgumentParser
import ClusterMetadata
import ControllerClient
import FloeService
import Foundation
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import NIOCore
import Simulation
import Synchronization

/// `floe bench wal`: appends to a WAL writer over its Kafka-framed port and reports appends/s,
/// MiB/s and latency percentiles beside the raw fdatasync latency of the same volume, plus
/// object-store PUTs per GiB uploaded.
struct BenchWAL: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Load a WAL writer with appends; compare with raw fdatasync; count PUTs per GiB."
    )

    @Option(help: "Streams (partitions of a bench topic) appended to round-robin.")
    var streams: Int = 1

    @Option(help: "Bytes of each record's value.")
    var recordSize: Int = 1024

    @Option(help: "Records per append (one v2 batch).")
    var recordsPerAppend: Int = 1

    @Option(help: "Appenders, each with one request in flight at a time and its own streams (at most --streams).")
    var concurrency: Int = 1

    @Option(help: "Seconds of load.")
    var duration: Double = 5

    @Option(help: "Directory for the WAL volume when the bench starts its own WAL writer (default: a temporary directory).")
    var volume: String?

    @Option(name: .customLong("object-store"), help: "Object store of the WAL writer the bench starts (default: file:// in a temporary directory on the same volume); e.g. file:///dev/shm/… to keep uploads off the WAL's disk, as a remote store would.")
    var objectStore: String?

    @Option(help: "Target a running WAL writer (HOST:PORT) instead of starting a controller and a WAL writer here.")
    var wal: String?

    @Option(help: "With --wal: its controllers (HOST:PORT,…).")
    var controllers: String?

    @Option(help: "With --wal: its admin address (HOST:PORT), for the PUT counters.")
    var admin: String?

    @Option(help: "With --wal: a directory on its volume, for the raw fdatasync comparison.")
    var rawDirectory: String?

    func validate() throws {
        guard (1...100_000).contains(streams) else { throw ValidationError("--streams must be in [1, 100000]") }
        guard (1...(8 << 20)).contains(recordSize) else { throw ValidationError("--record-size must be in [1, 8 MiB]") }
        guard (1...10_000).contains(recordsPerAppend) else { throw ValidationError("--records-per-append must be in [1, 10000]") }
        guard (1...4096).contains(concurrency) else { throw ValidationError("--concurrency must be in [1, 4096]") }
        guard duration > 0, duration <= 600 else { throw ValidationError("--duration must be in (0, 600]") }
        if wal != nil, controllers == nil || admin == nil {
            throw ValidationError("--wal needs --controllers and --admin")
        }
    }

    func run() async throws {
        var logger = Logger(label: "floe-bench-wal")
        logger.logLevel = .critical
        var local: LocalWALCluster?
        let walEndpoint: KafkaEndpoint
        let controllerEndpoints: [KafkaEndpoint]
        let adminAddress: KafkaEndpoint
        let rawDirectory: String
        if let wal, let controllers, let admin {
            walEndpoint = try parseEndpoints(wal)[0]
            controllerEndpoints = try parseEndpoints(controllers)
            adminAddress = try KafkaEndpoint(parsing: admin)
            rawDirectory = self.rawDirectory ?? NSTemporaryDirectory()
        } else {
            let cluster = try LocalWALCluster(volume: volume, objectStore: objectStore)
            try cluster.start()
            local = cluster
            walEndpoint = cluster.walEndpoint
            controllerEndpoints = [cluster.controllerEndpoint]
            adminAddress = cluster.walAdmin
            rawDirectory = cluster.volume
        }
        defer { local?.stop() }

        // The streams must exist at the controller, or the writer's uploads could not commit them.
        let controller = ControllerClient(endpoints: controllerEndpoints, logger: logger, retryDeadline: .seconds(30))
        let topicId = KafkaUUID.random()
        let topicName = "bench-wal-\(topicId.description.prefix(8))"
        _ = try await controller.write(.createTopics([TopicSpec(name: topicName, topicId: topicId, partitionCount: Int32(streams))]))
        let image = MetadataFollower(client: controller, logger: logger)
        let following = Task { await image.run() }
        defer { following.cancel() }
        var partitions: [PartitionRecord] = []
        for _ in 0..<500 {
            if let topic = await image.state.topic(id: topicId) {
                partitions = topic.partitions
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard partitions.count == streams else { throw ValidationError("the bench topic did not appear in the metadata") }
        try await waitUntilReady(adminAddress)

        print("floe bench wal")
        print("  WAL writer: \(walEndpoint) (\(local.map { "started here with a single controller, object store \($0.objectStore)" } ?? "targeted")), volume \(rawDirectory)")
        print("  streams: \(streams), record size: \(recordSize) B, records per append: \(recordsPerAppend), concurrency: \(min(concurrency, streams)), duration: \(duration) s")
        print("  cores: \(ProcessInfo.processInfo.activeProcessorCount)")
        print("")

        let raw = try rawFdatasync(directory: rawDirectory, seconds: min(2, duration))
        print("  raw 4 KiB write + fdatasync on the volume: p50 \(us(raw.p50)) µs, p99 \(us(raw.p99)) µs, p999 \(us(raw.p999)) µs (\(raw.count) syncs)")

        let before = try await walCounters(adminAddress)
        let transport = KafkaClient(logger: logger)
        let template = try makeBatch()
        let result = try await appendLoad(transport: transport, endpoint: walEndpoint, partitions: partitions, template: template)

        // Upload everything appended, then count what it took.
        var flush = WALFlushRequest()
        flush.streamId = -1
        flush.timeoutMs = 60_000
        _ = try await transport.send(flush, version: 0, to: walEndpoint, clientId: "floe-bench-wal", timeout: .seconds(70))
        let after = try await walCounters(adminAddress)
        await transport.closeAll()

        let seconds = inSeconds(result.elapsed)
        let appendedBytes = Double(result.appends) * Double(template.readableBytes)
        print("  appends: \(result.appends) in \(String(format: "%.2f", seconds)) s = \(Int(Double(result.appends) / seconds)) appends/s, \(String(format: "%.1f", appendedBytes / seconds / 1_048_576)) MiB/s of batches (\(result.errors) errors)")
        print("  append latency: p50 \(us(result.p50)) µs, p99 \(us(result.p99)) µs, p999 \(us(result.p999)) µs")
        let puts = after.puts - before.puts
        let uploaded = after.uploadedBytes - before.uploadedBytes
        let gib = uploaded / Double(1 << 30)
        print("  uploads: \(Int(puts)) PUTs for \(String(format: "%.1f", uploaded / 1_048_576)) MiB uploaded = \(gib > 0 ? String(format: "%.1f", puts / gib) : "n/a") PUTs per GiB")
    }

    struct LoadResult {
        var appends: Int
        var errors: Int
        var elapsed: Duration
        var p50: Duration
        var p99: Duration
        var p999: Duration
    }

    /// `concurrency` appenders, each owning every concurrency-th stream and keeping one append in flight.
    private func appendLoad(
        transport: KafkaClient, endpoint: KafkaEndpoint, partitions: [PartitionRecord], template: ByteBuffer
    ) async throws -> LoadResult {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start.advanced(by: .milliseconds(Int64(duration * 1000)))
        let perAppend = Int64(recordsPerAppend)
        let appenders = min(concurrency, partitions.count)
        let outcomes = try await withThrowingTaskGroup(of: ([Duration], Int).self) { group in
            for appender in 0..<appenders {
                let mine = Array(stride(from: appender, to: partitions.count, by: appenders)).map { partitions[$0] }
                group.addTask {
                    var latencies: [Duration] = []
                    var errors = 0
                    var next = [Int64](repeating: 0, count: mine.count)
                    var turn = 0
                    while clock.now < deadline {
                        let index = turn % mine.count
                        turn += 1
                        let partition = mine[index]
                        var batch = template
                        try RecordBatch.stamp(batchAt: 0, in: &batch, baseOffset: next[index], partitionLeaderEpoch: partition.leaderEpoch)
                        var request = WALAppendRequest()
                        request.streamId = Int64(partition.streamId)
                        request.epoch = partition.leaderEpoch
                        request.baseOffset = next[index]
                        request.lastOffset = next[index] + perAppend - 1
                        request.batches = batch
                        let sent = clock.now
                        let answer = try await transport.send(request, version: 0, to: endpoint, clientId: "floe-bench-wal", timeout: .seconds(30))
                        if answer.errorCode == 0 {
                            latencies.append(sent.duration(to: clock.now))
                            next[index] += perAppend
                        } else {
                            errors += 1
                            if answer.expectedBaseOffset >= 0 { next[index] = answer.expectedBaseOffset }
                        }
                    }
                    return (latencies, errors)
                }
            }
            var all: [([Duration], Int)] = []
            for try await outcome in group { all.append(outcome) }
            return all
        }
        let elapsed = start.duration(to: clock.now)
        var latencies = outcomes.flatMap { $0.0 }
        latencies.sort()
        return LoadResult(
            appends: latencies.count, errors: outcomes.reduce(0) { $0 + $1.1 }, elapsed: elapsed,
            p50: percentile(latencies, 0.50), p99: percentile(latencies, 0.99), p999: percentile(latencies, 0.999))
    }

    /// One batch of `recordsPerAppend` records; each append stamps its own base offset into a copy.
    private func makeBatch() throws -> ByteBuffer {
        var builder = RecordBatchBuilder(codec: .none, expectedPayloadBytes: recordsPerAppend * (recordSize + 32))
        var generator = SeededRandom(seed: 11)
        for index in 0..<recordsPerAppend {
            var value = ByteBuffer()
            while value.readableBytes + 8 <= recordSize { value.writeInteger(generator.next()) }
            while value.readableBytes < recordSize { value.writeInteger(UInt8(truncatingIfNeeded: generator.next())) }
            try builder.append(timestamp: 1_700_000_000_000 + Int64(index), key: nil, value: value)
        }
        return try builder.build().bytes
    }

    private func waitUntilReady(_ admin: KafkaEndpoint) async throws {
        for _ in 0..<1500 {
            if let response = try? await AdminClient.get(admin, path: "/readyz", timeout: .seconds(1)), response.status == 200 { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ValidationError("the WAL writer at \(admin) did not become ready")
    }

    /// PUTs and uploaded bytes so far, from the WAL writer's Prometheus metrics.
    private func walCounters(_ admin: KafkaEndpoint) async throws -> (puts: Double, uploadedBytes: Double) {
        let response = try await AdminClient.get(admin, path: "/metrics", timeout: .seconds(5))
        let text = String(decoding: response.body, as: UTF8.self)
        func sum(_ name: String) -> Double {
            text.split(separator: "\n").reduce(0) { total, line in
                guard line.hasPrefix(name), let last = line.split(separator: " ").last, let value = Double(last) else { return total }
                let rest = line.dropFirst(name.count)
                return rest.first == " " || rest.first == "{" ? total + value : total
            }
        }
        return (sum("floe_wal_object_puts_total"), sum("floe_wal_uploaded_bytes_total"))
    }

    /// Raw 4 KiB pwrite + fdatasync latencies in a scratch file on the WAL's volume.
    private func rawFdatasync(directory: String, seconds: Double) throws -> (p50: Duration, p99: Duration, p999: Duration, count: Int) {
        let path = directory + "/floe-bench-raw-\(UUID().uuidString)"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ValidationError("cannot create \(path): errno \(errno)") }
        defer {
            close(fd)
            unlink(path)
        }
        let block = [UInt8](repeating: 0x5A, count: 4096)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(Int64(seconds * 1000)))
        var latencies: [Duration] = []
        var offset: off_t = 0
        while clock.now < deadline, latencies.count < 100_000 {
            let start = clock.now
            let written = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, 4096, offset) }
            guard written == 4096, fdatasync(fd) == 0 else { throw ValidationError("raw write failed: errno \(errno)") }
            latencies.append(start.duration(to: clock.now))
            offset = (offset + 4096) % (64 << 20)
        }
        latencies.sort()
        return (percentile(latencies, 0.50), percentile(latencies, 0.99), percentile(latencies, 0.999), latencies.count)
    }
}

private func us(_ d: Duration) -> String {
    String(format: "%.0f", inSeconds(d) * 1e6)
}

/// A single controller and one WAL writer on free loopback ports, for the bench.
final class LocalWALCluster: @unchecked Sendable {
    let directory: String
    let volume: String
    let controllerPort: Int
    let walPort: Int
    let walAdminPort: Int
    let objectStore: String
    private var processes: [Process] = []
    private let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()

    init(volume: String?, objectStore: String? = nil) throws {
        directory = NSTemporaryDirectory() + "floe-bench-wal-\(UUID().uuidString)"
        self.volume = volume ?? directory + "/wal"
        self.objectStore = objectStore ?? "file://\(directory)/objects"
        try FileManager.default.createDirectory(atPath: self.volume, withIntermediateDirectories: true)
        controllerPort = try LocalControllers.freePort()
        walPort = try LocalControllers.freePort()
        walAdminPort = try LocalControllers.freePort()
    }

    var walEndpoint: KafkaEndpoint { KafkaEndpoint(host: "127.0.0.1", port: walPort) }
    var controllerEndpoint: KafkaEndpoint { KafkaEndpoint(host: "127.0.0.1", port: controllerPort) }
    var walAdmin: KafkaEndpoint { KafkaEndpoint(host: "127.0.0.1", port: walAdminPort) }

    func start() throws {
        try launch("floe-controller", [
            "--node-id", "1", "--listen", "127.0.0.1:\(controllerPort)", "--voters", "1@127.0.0.1:\(controllerPort)",
            "--data-dir", "\(directory)/controller", "--admin", "127.0.0.1:0", "--log-level", "warning",
        ])
        try launch("floe-wal-writer", [
            "--node-id", "201", "--zone", "a", "--listen", "127.0.0.1:\(walPort)", "--admin", "127.0.0.1:\(walAdminPort)",
            "--controllers", "127.0.0.1:\(controllerPort)", "--volume", volume,
            "--object-store", objectStore, "--log-level", "warning",
        ])
    }

    private func launch(_ name: String, _ arguments: [String]) throws {
        let binary = binDirectory.appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationError("no \(name) beside floe (\(binary)); build it first")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes.append(process)
    }

    func stop() {
        for process in processes.reversed() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        processes = []
        try? FileManager.default.removeItem(atPath: directory)
    }
}
