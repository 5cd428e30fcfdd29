import ClusterMetadata
import KafkaRecords
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ObjectStorage

/// Limits of a `CommittedReader`.
public struct CommittedReaderConfiguration: Sendable, Hashable {
    /// Bound on the bytes of cached blocks; a block larger than this is served but not cached.
    public var blockCacheBytes: Int
    /// Bound on the number of cached object indexes.
    public var indexCacheEntries: Int
    /// Blocks of the same stream fetched in the background after each block a read uses.
    public var readAheadBlocks: Int
    /// Bound on object-store GETs in flight at once, demand and read-ahead together.
    public var maxConcurrentReads: Int
    /// Trailing bytes fetched first when loading an index, hoping footer and index fit.
    public var tailReadBytes: Int

    /// The defaults suit a broker with a few hundred MiB to spare for cold reads.
    public init(
        blockCacheBytes: Int = 256 << 20, indexCacheEntries: Int = 4096, readAheadBlocks: Int = 2,
        maxConcurrentReads: Int = 16, tailReadBytes: Int = ObjectFormat.defaultTailRead
    ) {
        self.blockCacheBytes = blockCacheBytes
        self.indexCacheEntries = indexCacheEntries
        self.readAheadBlocks = readAheadBlocks
        self.maxConcurrentReads = maxConcurrentReads
        self.tailReadBytes = tailReadBytes
    }
}

/// Counters of a `CommittedReader` at one instant.
public struct CommittedReaderStats: Sendable, Equatable {
    /// Block reads served from the cache.
    public var blockHits = 0
    /// Block reads that started a GET.
    public var blockMisses = 0
    /// Block reads that waited for a GET another read (or read-ahead) had started.
    public var blockJoins = 0
    /// Index lookups served from the index cache.
    public var indexHits = 0
    /// Index lookups that started a load (footer and index GETs).
    public var indexMisses = 0
    /// Index lookups that waited for a load already under way.
    public var indexJoins = 0
    /// Ranged GETs sent to the store (index and blocks, read-ahead included).
    public var gets = 0
    /// GETs that failed.
    public var getFailures = 0
    /// GETs running now.
    public var inFlight = 0
    /// The most GETs ever running at once.
    public var maxInFlight = 0
    /// Index and block loads under way now (demand and read-ahead), each counted once however many readers wait on it.
    public var loading = 0
    /// GET permits nobody holds now (`maxConcurrentReads` when idle).
    public var freePermits = 0
    /// Loads queued for a GET permit now.
    public var waitingForPermit = 0
    /// Bytes of blocks in the cache (never above `blockCacheBytes`).
    public var bytesCached = 0
    /// Blocks in the cache.
    public var blocksCached = 0
    /// Object indexes in the cache (never above `indexCacheEntries`).
    public var indexesCached = 0
    /// Blocks dropped from the cache to make room.
    public var evictions = 0
    /// Blocks larger than the whole cache, served without caching.
    public var uncacheableBlocks = 0
    /// Read-ahead block loads started.
    public var readAheadStarted = 0
    /// Read-ahead index loads started (the next object's, when a read nears the end of one).
    public var indexReadAheadStarted = 0
    /// Read-ahead loads not started because every GET permit was taken.
    public var readAheadSkipped = 0

    /// All counters at zero.
    public init() {}
}

/// Why a committed read failed.
public enum CommittedReadError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The object is not in the store: it was deleted after compaction while the caller held older
    /// metadata. Re-read the metadata and retry with fresh segments.
    case objectMissing(objectId: ObjectID, key: String)
    /// The object's bytes fail a check (footer, index, block checksum, batch framing), or it does not
    /// hold the range the metadata says it does. Never retried into data.
    case corrupt(objectId: ObjectID, key: String, reason: String)
    /// The store failed after its own retries (5xx, timeouts, transport).
    case store(objectId: ObjectID, key: String, ObjectStoreError)

    public var description: String {
        switch self {
        case let .objectMissing(id, key): "object \(id) (\(key)) is missing from the store"
        case let .corrupt(id, key, reason): "object \(id) (\(key)) is corrupt: \(reason)"
        case let .store(id, key, error): "reading object \(id) (\(key)) failed: \(error)"
        }
    }
}
