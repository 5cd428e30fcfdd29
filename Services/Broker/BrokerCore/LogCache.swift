import ClusterMetadata
import DequeModule
import NIOCore

/// The leader's in-memory tail of each partition it leads: acknowledged batches in offset order,
/// bounded in bytes across all partitions. The oldest batches (across all partitions) leave first,
/// so tail readers hit it and readers that fell behind go to the WAL writer or object storage.
/// Not thread-safe: owned by `ReplicaManager`.
struct LogCache {
    struct Entry {
        var baseOffset: Int64
        var nextOffset: Int64
        var bytes: ByteBuffer
    }

    let capacity: Int
    private(set) var totalBytes = 0
    private var partitions: [PartitionKey: Deque<Entry>] = [:]
    /// Insertion order across partitions, for eviction.
    private var order: Deque<(key: PartitionKey, baseOffset: Int64)> = []

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Adds acknowledged batches; a gap after the partition's cached tail drops the older entries,
    /// so a partition's entries are always contiguous.
    mutating func append(_ key: PartitionKey, baseOffset: Int64, nextOffset: Int64, bytes: ByteBuffer) {
        guard capacity > 0, Self.cost(bytes) <= capacity else {
            drop(key)
            return
        }
        if let last = partitions[key]?.last, last.nextOffset != baseOffset { drop(key) }
        // Mutated in place: copying a partition's entries out and back would copy all of them on every append.
        partitions[key, default: []].append(Entry(baseOffset: baseOffset, nextOffset: nextOffset, bytes: bytes))
        order.append((key, baseOffset))
        totalBytes += Self.cost(bytes)
        while totalBytes > capacity, let oldest = order.popFirst() {
            guard let first = partitions[oldest.key]?.first, first.baseOffset == oldest.baseOffset else { continue }
            partitions[oldest.key]?.removeFirst()
            totalBytes -= Self.cost(first.bytes)
            if partitions[oldest.key]?.isEmpty == true { partitions[oldest.key] = nil }
        }
    }

    /// Forgets a partition (leadership lost or the tail became uncertain).
    mutating func drop(_ key: PartitionKey) {
        if let entries = partitions.removeValue(forKey: key) {
            totalBytes -= entries.reduce(0) { $0 + Self.cost($1.bytes) }
        }
    }

    /// What an entry costs in memory: its buffer's allocated capacity, not just its bytes.
    static func cost(_ bytes: ByteBuffer) -> Int {
        max(bytes.capacity, bytes.readableBytes)
    }

    /// The first offset the cache holds for `key`, nil when it holds none.
    func startOffset(_ key: PartitionKey) -> Int64? {
        partitions[key]?.first?.baseOffset
    }

    /// Whole appends from the one containing `offset`, up to about `maxBytes` (at least one), stopping
    /// before `limit`; nil when `offset` is below what the cache holds (read elsewhere).
    func read(_ key: PartitionKey, from offset: Int64, maxBytes: Int, limit: Int64) -> [ByteBuffer]? {
        guard let entries = partitions[key], let first = entries.first, offset >= first.baseOffset else { return nil }
        var result: [ByteBuffer] = []
        var bytes = 0
        // Binary search for the entry holding `offset`.
        var low = 0, high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].nextOffset <= offset { low = mid + 1 } else { high = mid }
        }
        var index = low
        while index < entries.count, entries[index].baseOffset < limit {
            let entry = entries[index]
            if !result.isEmpty, bytes + entry.bytes.readableBytes > maxBytes { break }
            result.append(entry.bytes)
            bytes += entry.bytes.readableBytes
            index += 1
        }
        return result
    }
}
