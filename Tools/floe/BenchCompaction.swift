import ArgumentParser
import ClusterMetadata
import CompactorCore
import Foundation
import KafkaProtocol
import Logging
import NIOCore
import ObjectStorage
import Simulation
import Synchronization

/// `floe bench compaction`: what it costs to read a partition from the beginning before and after
/// compaction (objects touched, GETs, bytes read), and how fast the compactor rewrites data.
struct BenchCompaction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compaction",
        abstract: "Read cost of a partition before and after compaction; compaction throughput.",
        discussion: """
            Writes --uploads stream-set objects, each holding one batch of every one of --partitions streams, as \
            WAL writers do, to the object store; reads one partition from offset 0 through the object format \
            (index GET, then one GET per block) and counts objects, GETs and bytes; runs the compactor (the \
            real CompactorCore against an in-process metadata state) until a pass changes nothing; reads again. \
            Throughput is source bytes read per second of pass time, and per second of process CPU time.
            """)

    @Option(help: "Streams (partitions) in every upload.") var partitions = 50
    @Option(help: "Stream-set objects written before compacting.") var uploads = 400
    @Option(name: .customLong("batch-bytes"), help: "Bytes of each stream's batch in an upload.") var batchBytes = 16 << 10
    @Option(name: .customLong("object-store"), help: "Object store URL (default: file:// in a temporary directory).") var objectStore: String?
    @Option(name: .customLong("stream-object-bytes"), help: "The compactor's target stream-object size.") var streamObjectBytes = 32 << 20
    @Flag(help: "Print one JSON line instead of text.") var json = false

    func validate() throws {
        guard (1...10_000).contains(partitions) else { throw ValidationError("--partitions must be in [1, 10000]") }
        guard (1...100_000).contains(uploads) else { throw ValidationError("--uploads must be in [1, 100000]") }
        guard (64...(8 << 20)).contains(batchBytes) else { throw ValidationError("--batch-bytes must be in [64, 8 MiB]") }
    }

    func run() async throws {
        var logger = Logger(label: "floe-bench-compaction")
        logger.logLevel = .critical
        let directory = NSTemporaryDirectory() + "floe-bench-compaction-\(getpid())"
        let url = objectStore ?? "file://\(directory)"
        let store = try makeObjectStore(url: url, logger: logger)
        defer { if objectStore == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let metadata = LocalMetadata()
        let streams = metadata.seed(partitions: partitions)
        var random = SeededRandom(seed: 42)
        let payload = (0..<batchBytes).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        for upload in 0..<uploads {
            try await metadata.upload(streams: streams, payload: payload, offset: Int64(upload) * 10, store: store)
        }
        let before = try await ReadCost.measure(stream: streams[0], metadata: metadata.current(), store: store)
        let compactor = Compactor(
            nodeId: LocalMetadata.compactorId,
            settings: CompactorSettings(streamObjectBytes: streamObjectBytes, maxPassBytes: 256 << 20, deleteGraceMillis: 0),
            metadata: metadata, store: store, now: { Millis(Date().timeIntervalSince1970 * 1000) }, logger: logger)
        let cpuStart = processCPUSeconds()
        let clock = ContinuousClock()
        let started = clock.now
        var passes = 0
        var totals = PassReport()
        while passes < 1000 {
            let report = try await compactor.runPass()
            passes += 1
            totals.bytesRead += report.bytesRead
            totals.bytesWritten += report.bytesWritten
            if !report.didWork { break }
        }
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let cpu = processCPUSeconds() - cpuStart
        let after = try await ReadCost.measure(stream: streams[0], metadata: metadata.current(), store: store)
        let state = await metadata.current()
        let mib = Double(totals.bytesRead) / 1_048_576
        let result = BenchCompactionResult(
            partitions: partitions, uploads: uploads, batchBytes: batchBytes, store: url.hasPrefix("file:") ? "file" : "s3",
            before: before, after: after, objectsBefore: uploads, objectsAfter: state.objects(in: .committed).count, passes: passes,
            sourceMiB: mib, seconds: seconds, cpuSeconds: cpu, mibPerSecond: mib / max(seconds, 1e-9), mibPerCPUSecond: mib / max(cpu, 1e-9))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            result.printText()
        }
    }
}

/// Process CPU time (user + system) in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
    let system = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    return user + system
}

/// What reading one partition from offset 0 costs.
struct ReadCost: Encodable {
    var objects = 0
    var gets = 0
    var bytes = 0

    /// Reads every block of `stream` the way a broker's committed read does: the index, then the blocks.
    static func measure(stream: StreamID, metadata: MetadataState, store: any ObjectStore) async throws -> ReadCost {
        var cost = ReadCost()
        let reader = ObjectReader(store: store)
        let locations = metadata.objects(covering: stream, from: 0)
        for objectId in Set(locations.map(\.objectId)).sorted() {
            guard let record = metadata.objects[objectId] else { continue }
            let key = ObjectKey.make(id: record.id, metadataCode: record.kind.rawValue)
            let index = try await reader.index(key: key, objectSize: Int(record.size))
            cost.objects += 1
            cost.gets += 1
            cost.bytes += min(Int(record.size), ObjectFormat.defaultTailRead)
            for entry in index.entries(stream: UInt64(bitPattern: stream)) {
                let block = try await reader.block(key: key, entry: entry)
                cost.gets += 1
                cost.bytes += block.readableBytes
            }
        }
        return cost
    }
}

struct BenchCompactionResult: Encodable {
    var bench = "compaction"
    var partitions: Int
    var uploads: Int
    var batchBytes: Int
    var store: String
    var before: ReadCost
    var after: ReadCost
    var objectsBefore: Int
    var objectsAfter: Int
    var passes: Int
    var sourceMiB: Double
    var seconds: Double
    var cpuSeconds: Double
    var mibPerSecond: Double
    var mibPerCPUSecond: Double

    func printText() {
        print("compaction: \(partitions) partitions × \(uploads) stream-set objects, \(batchBytes) B per partition per object, \(store) store")
        print("  reading partition 0 from offset 0:")
        print("    before: \(before.objects) objects, \(before.gets) GETs, \(before.bytes) bytes")
        print("    after:  \(after.objects) objects, \(after.gets) GETs, \(after.bytes) bytes")
        print("  objects in the store: \(objectsBefore) → \(objectsAfter)")
        print(String(format: "  compaction: %.1f MiB in %d passes, %.2f s (%.1f MiB/s), %.2f CPU s (%.1f MiB/s per core)",
                     sourceMiB, passes, seconds, mibPerSecond, cpuSeconds, mibPerCPUSecond))
    }
}

/// The controller's metadata in this process, so the bench measures the compactor and the store alone.
final class LocalMetadata: CompactorMetadata, Sendable {
    static let compactorId: NodeID = 401
    private let state = Mutex((metadata: MetadataState(), index: UInt64(0)))

    func current() async -> MetadataState { state.withLock { $0.metadata } }

    func write(_ command: MetadataCommand) async throws -> MetadataResult { apply(command) }

    @discardableResult
    func apply(_ command: MetadataCommand) -> MetadataResult {
        state.withLock { state in
            state.index += 1
            return state.metadata.apply(command, index: state.index)
        }
    }

    /// A broker, this compactor and a topic of `partitions`; returns the streams.
    func seed(partitions: Int) -> [StreamID] {
        apply(.registerNode(NodeRegistration(id: 101, kind: .broker, zone: "a", listener: "127.0.0.1:1", admin: "127.0.0.1:2")))
        apply(.registerNode(NodeRegistration(id: Self.compactorId, kind: .compactor, zone: "a", listener: "127.0.0.1:3", admin: "127.0.0.1:4")))
        apply(.createTopics([TopicSpec(
            name: "bench", topicId: KafkaUUID(high: 1, low: 1), partitionCount: Int32(partitions), configs: ["retention.ms": "-1"])]))
        return state.withLock { $0.metadata.streams.keys.sorted() }
    }

    /// One WAL upload: a batch of every stream at `offset` (10 offsets each).
    func upload(streams: [StreamID], payload: [UInt8], offset: Int64, store: any ObjectStore) async throws {
        guard case .objectPrepared(let id) = apply(.prepareObject(kind: .streamSet, deadline: Int64.max)) else {
            throw ValidationError("prepare failed")
        }
        var writer = ObjectWriter(expectedBytes: streams.count * payload.count)
        var batch = ByteBuffer()
        batch.writeBytes(payload)
        let epochs = state.withLock { state in streams.map { state.metadata.streams[$0]?.epoch ?? 0 } }
        for stream in streams {
            try writer.append(streamID: UInt64(stream), firstOffset: offset, endOffset: offset + 10, recordCount: 10, maxTimestamp: 0, batches: batch)
        }
        let object = try writer.finish()
        try await store.put(ObjectKey.make(id: id, metadataCode: ObjectKind.streamSet.rawValue), object)
        let ranges = zip(streams, epochs).map { StreamRange(streamId: $0, epoch: $1, startOffset: offset, endOffset: offset + 10) }
        let result = apply(.commitObject(ObjectCommit(objectId: id, size: Int64(object.readableBytes), ranges: ranges), compactedSources: [], now: 0))
        guard case .ok = result else { throw ValidationError("commit failed: \(result)") }
    }
}
