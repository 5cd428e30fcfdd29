import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import NIOConcurrencyHelpers
import NIOCore
import ObjectStorage

@testable import BrokerCore
import TestKit

/// One batch as written: its offsets and exact bytes.
struct StoredBatch {
    var baseOffset: Int64
    var lastOffset: Int64
    var bytes: ByteBuffer
}

/// Committed objects of several streams, written with the real `ObjectWriter`, put into a store and
/// committed in a real `MetadataState`, plus the batches each stream holds, in order.
struct CommittedFixture {
    var state = MetadataState()
    var streams: [StreamID] = []
    var batches: [StreamID: [StoredBatch]] = [:]
    /// Object ids in commit order with their bytes.
    var objects: [(id: ObjectID, key: String, bytes: ByteBuffer)] = []
    private var index: UInt64 = 0
    private var random: SeededRandom

    /// `objectCount` stream-set objects, each holding `batchesPerObject` batches of every one of
    /// `streamCount` streams, cut into blocks of at most `blockSize` bytes.
    init(
        streamCount: Int = 3, objectCount: Int = 3, batchesPerObject: Int = 8, blockSize: Int = 600, seed: UInt64 = 1
    ) throws {
        random = SeededRandom(seed: seed)
        apply(.registerNode(NodeRegistration(id: 1, kind: .broker, zone: "a", listener: "127.0.0.1:9001", admin: "127.0.0.1:8001")))
        apply(.createTopics([TopicSpec(
            name: "t", topicId: KafkaUUID(high: 0x4000_0001_0000, low: 0x8000_0000_0000_0001), partitionCount: Int32(streamCount))]))
        streams = state.streams.keys.sorted()
        for _ in 0..<objectCount {
            try addObject(batchesPerObject: batchesPerObject, blockSize: blockSize)
        }
    }

    /// Appends one more committed object holding `batchesPerObject` new batches of every stream.
    mutating func addObject(batchesPerObject: Int, blockSize: Int, kind: ObjectKind = .streamSet) throws {
        guard case .objectPrepared(let id) = apply(.prepareObject(kind: kind, deadline: 1_000_000)) else {
            throw FixtureError("prepareObject failed")
        }
        var writer = ObjectWriter(blockSize: blockSize)
        var ranges: [StreamRange] = []
        for stream in streams {
            let start = batches[stream]?.last.map { $0.lastOffset + 1 } ?? 0
            var next = start
            for _ in 0..<batchesPerObject {
                let records = Int.random(in: 1...4, using: &random)
                let valueSize = Int.random(in: 10...120, using: &random)
                var builder = RecordBatchBuilder(baseOffset: next, partitionLeaderEpoch: 0)
                for record in 0..<records {
                    var value = ByteBufferAllocator().buffer(capacity: valueSize)
                    value.writeRepeatingByte(UInt8(truncatingIfNeeded: Int(next) + record), count: valueSize)
                    try builder.append(timestamp: 1_700_000_000_000 + next, key: nil, value: value)
                }
                let batch = try builder.build()
                try writer.append(
                    streamID: UInt64(bitPattern: stream), firstOffset: batch.baseOffset, endOffset: batch.nextOffset,
                    recordCount: batch.recordCount, maxTimestamp: batch.maxTimestamp, batches: batch.bytes)
                batches[stream, default: []].append(StoredBatch(baseOffset: batch.baseOffset, lastOffset: batch.lastOffset, bytes: batch.bytes))
                next = batch.nextOffset
            }
            let epoch = state.streams[stream]?.epoch ?? 0
            ranges.append(StreamRange(streamId: stream, epoch: epoch, startOffset: start, endOffset: next))
        }
        let bytes = try writer.finish()
        let result = apply(.commitObject(ObjectCommit(objectId: id, size: Int64(bytes.readableBytes), ranges: ranges), compactedSources: [], now: 1))
        guard case .ok = result else { throw FixtureError("commitObject answered \(result)") }
        let keyKind: ObjectKey.Kind = kind == .stream ? .stream : .streamSet
        objects.append((id, ObjectKey.make(id: UInt64(bitPattern: id), kind: keyKind), bytes))
    }

    /// Puts every object into `store`.
    func upload(to store: some ObjectStore) async throws {
        for object in objects { try await store.put(object.key, object.bytes) }
    }

    /// One past the last offset of `stream`.
    func end(of stream: StreamID) -> Int64 { (batches[stream]?.last?.lastOffset ?? -1) + 1 }

    func segments(_ stream: StreamID, from offset: Int64) -> [CommittedSegment] {
        committedSegments(in: state, stream: stream, from: offset)
    }

    /// What a read must return: whole batches from the one holding `offset`, up to `maxBytes`
    /// but at least one.
    func expected(_ stream: StreamID, from offset: Int64, maxBytes: Int) -> ByteBuffer {
        var out = ByteBuffer()
        for batch in batches[stream] ?? [] where batch.lastOffset >= offset {
            if out.readableBytes > 0, out.readableBytes + batch.bytes.readableBytes > maxBytes { break }
            out.writeImmutableBuffer(batch.bytes)
            if out.readableBytes >= maxBytes { break }
        }
        return out
    }

    @discardableResult
    private mutating func apply(_ command: MetadataCommand) -> MetadataResult {
        index += 1
        return state.apply(command, index: index, term: 1)
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Base offsets of the batches in a record set (to compare results readably).
func baseOffsets(_ recordSet: ByteBuffer) throws -> [Int64] {
    try RecordBatch.parseRecordSet(recordSet).batches.map(\.baseOffset)
}

/// A store that wraps `inner` and forwards every call it does not take over itself.
protocol WrappingStore: ObjectStore {
    var inner: any ObjectStore { get }
}

extension WrappingStore {
    var stats: ObjectStoreStats { inner.stats }
    func put(_ key: String, _ data: ByteBuffer) async throws { try await inner.put(key, data) }
    func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool { try await inner.putIfAbsent(key, data) }
    func get(_ key: String) async throws -> ByteBuffer { try await inner.get(key) }
    func head(_ key: String) async throws -> ObjectInfo? { try await inner.head(key) }
    func delete(_ key: String) async throws { try await inner.delete(key) }
    func delete(_ keys: [String]) async throws { try await inner.delete(keys) }
    func list(prefix: String) async throws -> [ObjectInfo] { try await inner.list(prefix: prefix) }
    func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer { try await inner.get(key, range: range) }
}

/// Wraps a store: counts ranged GETs and tracks how many run at once; while closed, GETs wait
/// until `open()` (or until `release(count:)` lets some through).
final class GatedStore: WrappingStore {
    private struct State {
        var closed = false
        var gets = 0
        var inFlight = 0
        var maxInFlight = 0
        var blocked: [CheckedContinuation<Void, Never>] = []
        var watchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    let inner: any ObjectStore
    private let state = NIOLockedValueBox(State())

    init(_ inner: any ObjectStore = InMemoryObjectStore()) { self.inner = inner }

    var gets: Int { state.withLockedValue { $0.gets } }
    var inFlight: Int { state.withLockedValue { $0.inFlight } }
    var maxInFlight: Int { state.withLockedValue { $0.maxInFlight } }
    var blockedCount: Int { state.withLockedValue { $0.blocked.count } }

    /// Makes later GETs wait.
    func close() { state.withLockedValue { $0.closed = true } }

    /// Lets every waiting and later GET through.
    func open() {
        let blocked = state.withLockedValue { state in
            state.closed = false
            defer { state.blocked = [] }
            return state.blocked
        }
        for continuation in blocked { continuation.resume() }
    }

    /// Suspends until at least `count` GETs are waiting at the gate.
    func waitForBlocked(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state in
                if state.blocked.count >= count { return true }
                state.watchers.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
        state.withLockedValue {
            $0.gets += 1
            $0.inFlight += 1
            $0.maxInFlight = max($0.maxInFlight, $0.inFlight)
        }
        defer { state.withLockedValue { $0.inFlight -= 1 } }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (pass, woken) = state.withLockedValue { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                guard state.closed else { return (true, []) }
                state.blocked.append(continuation)
                let count = state.blocked.count
                let woken = state.watchers.filter { $0.count <= count }.map(\.continuation)
                state.watchers.removeAll { $0.count <= count }
                return (false, woken)
            }
            for watcher in woken { watcher.resume() }
            if pass { continuation.resume() }
        }
        return try await inner.get(key, range: range)
    }
}

/// Wraps a store so that a seeded share of ranged GETs fail with a transport error.
final class FlakyStore: WrappingStore {
    let inner: any ObjectStore
    private let random: NIOLockedValueBox<SeededRandom>
    private let failurePercent = NIOLockedValueBox(0)

    init(_ inner: any ObjectStore, seed: UInt64) {
        self.inner = inner
        self.random = NIOLockedValueBox(SeededRandom(seed: seed))
    }


    /// Sets the share of GETs that fail, 0...100.
    func fail(percent: Int) { failurePercent.withLockedValue { $0 = percent } }

    func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
        let percent = failurePercent.withLockedValue { $0 }
        let roll = random.withLockedValue { Int.random(in: 0..<100, using: &$0) }
        if roll < percent { throw ObjectStoreError.transport("injected failure") }
        // Yield so concurrent loads interleave as they would over a network.
        await Task.yield()
        return try await inner.get(key, range: range)
    }
}
