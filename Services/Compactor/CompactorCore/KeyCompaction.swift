import ClusterMetadata
import KafkaRecords
import NIOCore
import ObjectStorage

/// A compacted topic's cleaning rules (`cleanup.policy=compact`), from its configs with Kafka's defaults.
public struct CleaningRules: Sendable, Hashable {
    /// A tombstone (null value) stays readable this long after its batch's timestamp.
    public var deleteRetentionMillis: Int64
    /// Records younger than this are never cleaned away.
    public var minCompactionLagMillis: Int64
    /// A partition is cleaned once at least this share of its cleanable records would go.
    public var minCleanableDirtyRatio: Double

    public init(deleteRetentionMillis: Int64 = 86_400_000, minCompactionLagMillis: Int64 = 0, minCleanableDirtyRatio: Double = 0.5) {
        self.deleteRetentionMillis = deleteRetentionMillis
        self.minCompactionLagMillis = minCompactionLagMillis
        self.minCleanableDirtyRatio = minCleanableDirtyRatio
    }

    /// The rules of a topic whose `cleanup.policy` includes `compact`, or nil for other topics.
    public init?(configs: [String: String]) {
        guard TopicConfig.cleanupPolicies(configs).contains("compact") else { return nil }
        self.init(
            deleteRetentionMillis: configs["delete.retention.ms"].flatMap { Int64($0) } ?? 86_400_000,
            minCompactionLagMillis: configs["min.compaction.lag.ms"].flatMap { Int64($0) } ?? 0,
            minCleanableDirtyRatio: configs["min.cleanable.dirty.ratio"].flatMap { Double($0) } ?? 0.5)
    }
}

/// Kafka's log cleaning over one partition's blocks: the latest record of every key is kept at its
/// offset, older ones go; a latest tombstone goes once `delete.retention.ms` has passed; records
/// without a key and control batches are kept. Batches keep their offsets, producer fields and
/// last offset delta, so offsets have gaps where records went; a batch left without records is
/// kept (empty) where it is its block's last or its producer's last, so every block still ends at
/// its offset and producer sequences survive. Blocks keep their offset ranges.
public enum KeyCompaction {
    /// One cleaned block: the source block's range with fewer batches.
    public struct CleanedBlock: Sendable {
        public var source: StoredBlock
        public var batches: ByteBuffer
        public var recordCount: Int32
    }

    /// The outcome for a run of blocks: the cleaned blocks, and how many records they held and keep.
    public struct Cleaning: Sendable {
        public var blocks: [CleanedBlock]
        public var recordsBefore: Int
        public var recordsAfter: Int

        /// The share of records cleaning removes.
        public var dirtyRatio: Double { recordsBefore == 0 ? 0 : Double(recordsBefore - recordsAfter) / Double(recordsBefore) }
    }

    /// Cleans `blocks` (one partition, offset order) given each block's bytes.
    public static func clean(
        _ blocks: [(block: StoredBlock, bytes: ByteBuffer)], rules: CleaningRules, now: Millis
    ) throws -> Cleaning {
        struct Parsed {
            var batch: RecordBatch
            var records: [Record]
        }
        var parsed: [[Parsed]] = []
        var latest: [ByteBuffer: Int64] = [:]
        var lastOfProducer: [Int64: (Int, Int)] = [:]
        var before = 0
        for (b, entry) in blocks.enumerated() {
            var iterator = RecordSetIterator(entry.bytes)
            var list: [Parsed] = []
            while let batch = try iterator.next() {
                let records = batch.header.isControl ? [] : try batch.records(maxUncompressedBytes: 64 << 20)
                for record in records {
                    if let key = record.key { latest[key] = record.offset(in: batch.header) }
                }
                if batch.header.producerId >= 0 { lastOfProducer[batch.header.producerId] = (b, list.count) }
                before += batch.header.isControl ? 0 : records.count
                list.append(Parsed(batch: batch, records: records))
            }
            guard iterator.partialBatch == nil else { throw CompactorError.inconsistent("block ends inside a batch") }
            parsed.append(list)
        }
        var cleaned: [CleanedBlock] = []
        var after = 0
        for (b, list) in parsed.enumerated() {
            var out = ByteBuffer()
            var count: Int32 = 0
            for (i, item) in list.enumerated() {
                if item.batch.header.isControl {
                    out.writeImmutableBuffer(item.batch.bytes)
                    continue
                }
                let header = item.batch.header
                let expired = now - header.maxTimestamp > rules.deleteRetentionMillis
                let kept = item.records.filter { record in
                    guard let key = record.key else { return true }
                    guard latest[key] == record.offset(in: header) else { return false }
                    return record.value != nil || !expired
                }
                let last = i == list.count - 1
                let producerLast = header.producerId >= 0 && lastOfProducer[header.producerId].map { $0 == (b, i) } == true
                if kept.count == item.records.count {
                    out.writeImmutableBuffer(item.batch.bytes)
                } else if !kept.isEmpty || last || producerLast {
                    out.writeImmutableBuffer(try item.batch.retaining(kept).bytes)
                }
                count += Int32(kept.count)
                after += kept.count
            }
            cleaned.append(CleanedBlock(source: blocks[b].block, batches: out, recordCount: count))
        }
        return Cleaning(blocks: cleaned, recordsBefore: before, recordsAfter: after)
    }
}
