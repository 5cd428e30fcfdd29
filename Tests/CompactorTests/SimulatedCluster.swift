import ClusterMetadata
import CompactorCore
import KafkaProtocol
import NIOCore
import ObjectStorage
import Synchronization
import TestKit

/// The process died at this step: the simulated compactor's every later call fails too.
struct SimulatedCrash: Error {}

/// Where a fault plan strikes: before the step's effect, or after it with the answer lost.
enum FaultTiming: CaseIterable { case before, after }

/// Counts a compactor's controller writes and store calls and crashes it at one of them. Once
/// crashed, every further call fails, as for a killed process.
final class FaultPlan: Sendable {
    private struct State {
        var steps = 0
        var crashAt: Int?
        var timing = FaultTiming.before
        var crashed = false
    }
    private let state: Mutex<State>
    /// Instead of crashing: another process's work, run once just before step `interleaveAt`.
    private let interleaveAt: Int?
    private let interleave: (@Sendable () async throws -> Void)?

    init(crashAt: Int? = nil, timing: FaultTiming = .before) {
        state = Mutex(State(crashAt: crashAt, timing: timing))
        interleaveAt = nil
        interleave = nil
    }

    init(interleaveAt step: Int, _ other: @escaping @Sendable () async throws -> Void) {
        state = Mutex(State())
        interleaveAt = step
        interleave = other
    }

    var steps: Int { state.withLock { $0.steps } }
    var crashed: Bool { state.withLock { $0.crashed } }

    /// Runs one step: `effect` happens unless the crash comes before it; the caller sees a crash
    /// before or after it at the planned step, and at every step after that.
    func step<T>(_ effect: () async throws -> T) async throws -> T {
        if let interleave, state.withLock({ $0.steps }) == interleaveAt { try await interleave() }
        let timing: FaultTiming? = state.withLock { state in
            if state.crashed { return .before }
            defer { state.steps += 1 }
            guard state.steps == state.crashAt else { return nil }
            state.crashed = true
            return state.timing
        }
        if timing == .before { throw SimulatedCrash() }
        let result = try await effect()
        if timing == .after { throw SimulatedCrash() }
        return result
    }
}

/// The controller in memory: commands apply to one `MetadataState` at once.
final class SimulatedController: Sendable {
    private let state = Mutex((metadata: MetadataState(), index: UInt64(0)))

    var metadata: MetadataState { state.withLock { $0.metadata } }

    @discardableResult
    func apply(_ command: MetadataCommand) -> MetadataResult {
        state.withLock { state in
            state.index += 1
            return state.metadata.apply(command, index: state.index)
        }
    }
}

/// One compactor process's view of the simulated controller, through its fault plan.
struct FaultyMetadata: CompactorMetadata {
    let controller: SimulatedController
    let faults: FaultPlan

    func current() async -> MetadataState { controller.metadata }

    func write(_ command: MetadataCommand) async throws -> MetadataResult {
        try await faults.step { controller.apply(command) }
    }
}

/// One compactor process's view of the shared store, through its fault plan.
struct FaultyStore: ObjectStore {
    let base: InMemoryObjectStore
    let faults: FaultPlan

    var stats: ObjectStoreStats { base.stats }
    func put(_ key: String, _ data: ByteBuffer) async throws { try await faults.step { try await base.put(key, data) } }
    func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool { try await faults.step { try await base.putIfAbsent(key, data) } }
    func get(_ key: String) async throws -> ByteBuffer { try await faults.step { try await base.get(key) } }
    func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer { try await faults.step { try await base.get(key, range: range) } }
    func head(_ key: String) async throws -> ObjectInfo? { try await faults.step { try await base.head(key) } }
    func delete(_ key: String) async throws { try await faults.step { try await base.delete(key) } }
    func delete(_ keys: [String]) async throws { try await faults.step { try await base.delete(keys) } }
    func list(prefix: String) async throws -> [ObjectInfo] { try await faults.step { try await base.list(prefix: prefix) } }
}

/// A cluster with a compactor's worth of data: streams written by simulated WAL uploads (one
/// stream-set object each), every batch remembered so reads can be checked byte for byte.
final class CompactionWorld: Sendable {
    static let compactorId: NodeID = 401
    static let brokerId: NodeID = 101

    struct Batch: Sendable, Hashable {
        var first: Int64
        var end: Int64
        var timestamp: Int64
        var bytes: [UInt8]
    }

    let controller = SimulatedController()
    let store = InMemoryObjectStore()
    let clock = Mutex<Millis>(1_000_000)
    /// Every batch uploaded, per stream, in offset order.
    let batches = Mutex<[StreamID: [Batch]]>([:])

    var now: Millis { clock.withLock { $0 } }
    func advance(by millis: Millis) { clock.withLock { $0 += millis } }

    /// Topics `t0`, `t1`, … with `partitions` each; `configs` apply to `t0`.
    init(topics: Int, partitions: Int32, configs: [String: String] = [:]) {
        controller.apply(.registerNode(NodeRegistration(id: Self.brokerId, kind: .broker, zone: "a", listener: "b:1", admin: "b:2")))
        controller.apply(.registerNode(NodeRegistration(id: Self.compactorId, kind: .compactor, zone: "a", listener: "c:1", admin: "c:2")))
        let specs = (0..<topics).map { t in
            TopicSpec(
                name: "t\(t)", topicId: KafkaUUID(high: 7, low: UInt64(t + 1)),
                partitionCount: partitions, configs: t == 0 ? configs : [:])
        }
        controller.apply(.createTopics(specs))
    }

    var streamIds: [StreamID] { controller.metadata.streams.keys.sorted() }

    /// One WAL upload: a stream-set object with one to three batches of each chosen stream.
    func upload(_ random: inout SeededRandom, streams: [StreamID]) async throws {
        guard case .objectPrepared(let id) = controller.apply(.prepareObject(kind: .streamSet, deadline: now + 600_000)) else {
            throw ClusterTestError("prepare failed")
        }
        var writer = ObjectWriter(blockSize: 4096)
        var ranges: [StreamRange] = []
        var added: [StreamID: [Batch]] = [:]
        for stream in streams.sorted() {
            guard let record = controller.metadata.streams[stream] else { continue }
            var offset = record.committedEnd
            let start = offset
            for _ in 0..<random.between(1, 3) {
                let records = Int64(random.between(1, 20))
                let bytes = (0..<random.between(40, 1500)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                let batch = Batch(first: offset, end: offset + records, timestamp: now, bytes: bytes)
                var buffer = ByteBuffer()
                buffer.writeBytes(bytes)
                try writer.append(
                    streamID: UInt64(stream), firstOffset: batch.first, endOffset: batch.end, recordCount: Int32(records),
                    maxTimestamp: batch.timestamp, batches: buffer)
                added[stream, default: []].append(batch)
                offset += records
            }
            ranges.append(StreamRange(streamId: stream, epoch: record.epoch, startOffset: start, endOffset: offset))
        }
        let object = try writer.finish()
        try await store.put(ObjectKey.make(id: id, metadataCode: ObjectKind.streamSet.rawValue), object)
        let result = controller.apply(.commitObject(
            ObjectCommit(objectId: id, size: Int64(object.readableBytes), ranges: ranges), compactedSources: [], now: now))
        guard case .ok = result else { throw ClusterTestError("commit failed: \(result)") }
        batches.withLock { all in
            for (stream, list) in added { all[stream, default: []] += list }
        }
    }

    /// A compactor process on this world, crashing where `faults` says.
    func compactor(_ faults: FaultPlan = FaultPlan(), settings: CompactorSettings) -> Compactor {
        Compactor(
            nodeId: Self.compactorId, settings: settings,
            metadata: FaultyMetadata(controller: controller, faults: faults),
            store: FaultyStore(base: store, faults: faults), now: { [self] in self.now }, logger: testLogger)
    }
}

struct ClusterTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
