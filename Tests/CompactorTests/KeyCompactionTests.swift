import ClusterMetadata
import CompactorCore
import KafkaRecords
import NIOCore
import ObjectStorage
import Testing
import TestKit

/// Key compaction with Kafka's semantics, end to end through the compactor: batches of keyed
/// records are uploaded as stream-set objects of a `cleanup.policy=compact` topic, the compactor
/// runs, and the partition is read back from the store batch by batch.
@Suite struct KeyCompactionTests {
    static let settings = CompactorSettings(deleteGraceMillis: 1000, orphanScanIntervalMillis: 1000)

    /// What one record was: its offset, key (nil: none) and value (nil: tombstone).
    struct Written: Hashable {
        var offset: Int64
        var key: String?
        var value: String?
    }

    /// Uploads one stream-set object holding one batch per entry of `batches` (records with keys and values).
    static func upload(
        _ world: CompactionWorld, stream: StreamID, batches: [[(String?, String?)]], timestamp: Int64, producerId: Int64 = -1
    ) async throws -> [Written] {
        guard case .objectPrepared(let id) = world.controller.apply(.prepareObject(kind: .streamSet, deadline: world.now + 600_000)) else {
            throw ClusterTestError("prepare failed")
        }
        let record = world.controller.metadata.streams[stream]!
        var offset = record.committedEnd
        var writer = ObjectWriter(blockSize: 300)
        var written: [Written] = []
        for records in batches {
            var builder = RecordBatchBuilder(codec: .lz4, baseOffset: offset, producerId: producerId, producerEpoch: producerId >= 0 ? 0 : -1,
                                             baseSequence: producerId >= 0 ? Int32(offset) : -1)
            for (index, (key, value)) in records.enumerated() {
                try builder.append(
                    timestamp: timestamp, key: key.map { ByteBuffer(string: $0) }, value: value.map { ByteBuffer(string: $0) })
                written.append(Written(offset: offset + Int64(index), key: key, value: value))
            }
            let batch = try builder.build()
            try writer.append(
                streamID: UInt64(stream), firstOffset: offset, endOffset: offset + Int64(records.count), recordCount: Int32(records.count),
                maxTimestamp: timestamp, batches: batch.bytes)
            offset += Int64(records.count)
        }
        let object = try writer.finish()
        try await world.store.put(ObjectKey.make(id: id, metadataCode: ObjectKind.streamSet.rawValue), object)
        let result = world.controller.apply(.commitObject(
            ObjectCommit(objectId: id, size: Int64(object.readableBytes), ranges: [
                StreamRange(streamId: stream, epoch: record.epoch, startOffset: record.committedEnd, endOffset: offset),
            ]), compactedSources: [], now: world.now))
        guard case .ok = result else { throw ClusterTestError("commit failed: \(result)") }
        return written
    }

    /// Every batch of the stream, read from its objects in offset order.
    static func read(_ world: CompactionWorld, stream streamId: StreamID) async throws -> (batches: [RecordBatch], records: [Written]) {
        let state = world.controller.metadata
        var batches: [RecordBatch] = []
        var records: [Written] = []
        var seen: Set<ObjectID> = []
        for location in state.objects(covering: streamId, from: 0) where seen.insert(location.objectId).inserted {
            let object = state.objects[location.objectId]!
            let bytes = try await world.store.get(ObjectKey.make(id: object.id, metadataCode: object.kind.rawValue))
            for entry in try ObjectIndex.decode(object: bytes).entries(stream: UInt64(streamId)) {
                var iterator = RecordSetIterator(bytes.getSlice(at: bytes.readerIndex + Int(entry.position), length: Int(entry.length))!)
                while let batch = try iterator.next() {
                    #expect(batch.verifyCRC())
                    #expect(batch.header.baseOffset >= entry.firstOffset && batch.nextOffset <= entry.endOffset)
                    batches.append(batch)
                    for record in try batch.records(maxUncompressedBytes: 1 << 20) {
                        records.append(Written(
                            offset: record.offset(in: batch.header), key: record.key.map { String(buffer: $0) },
                            value: record.value.map { String(buffer: $0) }))
                    }
                }
            }
        }
        return (batches, records)
    }

    /// What Kafka's cleaner leaves of `written`: the latest record of each key, records without a
    /// key, and latest tombstones only while `keepTombstones`.
    static func expected(_ written: [Written], keepTombstones: Bool) -> [Written] {
        var latest: [String: Int64] = [:]
        for record in written { if let key = record.key { latest[key] = record.offset } }
        return written.filter { record in
            guard let key = record.key else { return true }
            return latest[key] == record.offset && (record.value != nil || keepTombstones)
        }
    }

    static func settle(_ world: CompactionWorld, advance: Millis = 1001) async throws {
        let compactor = world.compactor(settings: settings)
        for _ in 0..<10 {
            world.advance(by: advance)
            if !(try await compactor.runPass()).didWork { return }
        }
        throw ClusterTestError("did not settle")
    }

    @Test func latestValuePerKeySurvivesAtItsOffset() async throws {
        let world = CompactionWorld(topics: 1, partitions: 1, configs: ["cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"])
        let stream = world.streamIds[0]
        var random = SeededRandom(seed: 3)
        var written: [Written] = []
        for upload in 0..<6 {
            let batches = (0..<4).map { _ in
                (0..<Int(random.between(1, 6))).map { _ -> (String?, String?) in
                    let key = random.chance(50) ? nil : "k\(random.below(12))"
                    return (key, random.chance(100) ? nil : "v\(upload)-\(random.below(1000))")
                }
            }
            written += try await Self.upload(world, stream: stream, batches: batches, timestamp: world.now)
        }
        try await Self.settle(world)
        let (batches, records) = try await Self.read(world, stream: stream)
        #expect(records == Self.expected(written, keepTombstones: true))
        #expect(records.count < written.count)
        // Offsets are kept, the end included: the last batch still ends where the partition does.
        #expect(batches.last?.nextOffset == world.controller.metadata.streams[stream]?.committedEnd)
        #expect(world.objectCounts()[.streamSet, default: 0] == 0)

        // Past delete.retention.ms (a day by default) the latest tombstones go too.
        world.advance(by: 86_400_001)
        written += try await Self.upload(world, stream: stream, batches: [[("k0", "late")]], timestamp: world.now)
        try await Self.settle(world)
        let (_, after) = try await Self.read(world, stream: stream)
        let tombstonesGone = Self.expected(written, keepTombstones: false).filter { $0.offset < written.last!.offset }
        #expect(after.filter { $0.offset < written.last!.offset } == tombstonesGone)
        #expect(after.last == written.last)
        try await world.checkNoGarbage()
    }

    @Test func youngRecordsAndCleanPartitionsAreLeftAlone() async throws {
        let world = CompactionWorld(topics: 1, partitions: 1, configs: ["cleanup.policy": "compact", "min.compaction.lag.ms": "60000"])
        let stream = world.streamIds[0]
        var written = try await Self.upload(world, stream: stream, batches: [[("a", "1"), ("a", "2"), ("a", "3"), ("b", "1")]], timestamp: world.now)
        try await Self.settle(world)
        #expect(try await Self.read(world, stream: stream).records == written, "younger than min.compaction.lag.ms")
        world.advance(by: 60_000)
        try await Self.settle(world)
        #expect(try await Self.read(world, stream: stream).records == Self.expected(written, keepTombstones: true))

        // Below min.cleanable.dirty.ratio (0.5 by default) nothing is rewritten.
        let other = CompactionWorld(topics: 1, partitions: 1, configs: ["cleanup.policy": "compact"])
        let unique = (0..<10).map { ("key\($0)" as String?, "v" as String?) }
        written = try await Self.upload(other, stream: other.streamIds[0], batches: [unique + [("key0", "w"), ("key1", "w")]], timestamp: other.now)
        try await Self.settle(other)
        #expect(try await Self.read(other, stream: other.streamIds[0]).records == written)
    }

    /// A batch whose records all went stays as an empty batch where it is its producer's last, so
    /// an idempotent producer's sequence survives cleaning.
    @Test func emptiedBatchOfAProducerIsKeptEmpty() async throws {
        let world = CompactionWorld(topics: 1, partitions: 1, configs: ["cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0"])
        let stream = world.streamIds[0]
        _ = try await Self.upload(world, stream: stream, batches: [[("a", "1")]], timestamp: world.now, producerId: 7)
        _ = try await Self.upload(world, stream: stream, batches: [[("b", "1")], [("a", "2"), ("b", "2")]], timestamp: world.now, producerId: 9)
        try await Self.settle(world)
        let (batches, records) = try await Self.read(world, stream: stream)
        #expect(records.map(\.offset) == [1, 2] || records.map(\.offset) == [2, 3])
        let producer7 = batches.filter { $0.header.producerId == 7 }
        #expect(producer7.count == 1 && producer7[0].header.recordCount == 0 && producer7[0].header.lastOffsetDelta == 0)
        #expect(batches.allSatisfy { $0.verifyCRC() })
    }
}
