import ClusterMetadata
import KafkaRecords
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ObjectStorage

/// Serves committed stream data from object storage: record batches cut from verified blocks,
/// through a byte-bounded block cache and an index cache, with single-flight loads, read-ahead
/// and a FIFO bound on concurrent GETs. Tail reads never come here, so cold reads stay isolated.
public final class CommittedReader: Sendable {
    /// The limits this reader runs with.
    public let configuration: CommittedReaderConfiguration
    private let store: any ObjectStore
    private let logger: Logger
    private let permits: FIFOAsyncSemaphore
    private let blocks: SingleFlightCache<BlockKey, ByteBuffer>
    private let layouts: SingleFlightCache<ObjectID, ObjectLayout>
    private let io = NIOLockedValueBox(IOCounters())

    private struct BlockKey: Hashable, Sendable {
        var objectId: ObjectID
        var position: UInt64
    }

    private struct IOCounters {
        var gets = 0
        var failures = 0
        var inFlight = 0
        var maxInFlight = 0
        var readAheadSkipped = 0
    }

    /// An object's index arranged for lookups: each stream's blocks in offset order.
    private struct ObjectLayout: Sendable {
        var streams: [UInt64: [BlockIndexEntry]]
    }

    /// A reader of `store` with empty caches.
    public init(store: any ObjectStore, configuration: CommittedReaderConfiguration = .init(), logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.permits = FIFOAsyncSemaphore(permits: configuration.maxConcurrentReads)
        self.blocks = SingleFlightCache(capacity: configuration.blockCacheBytes) { $0.readableBytes }
        self.layouts = SingleFlightCache(capacity: configuration.indexCacheEntries) { _ in 1 }
    }

    /// The current counters.
    public var stats: CommittedReaderStats {
        let blockCounters = blocks.counters
        let layoutCounters = layouts.counters
        let io = io.withLockedValue { $0 }
        var stats = CommittedReaderStats()
        stats.blockHits = blockCounters.hits
        stats.blockMisses = blockCounters.misses
        stats.blockJoins = blockCounters.joins
        stats.indexHits = layoutCounters.hits
        stats.indexMisses = layoutCounters.misses
        stats.indexJoins = layoutCounters.joins
        stats.gets = io.gets
        stats.getFailures = io.failures
        stats.inFlight = io.inFlight
        stats.maxInFlight = io.maxInFlight
        stats.loading = blocks.loading + layouts.loading
        stats.freePermits = permits.available
        stats.waitingForPermit = permits.waiting
        stats.bytesCached = blocks.totalCost
        stats.blocksCached = blocks.count
        stats.indexesCached = layouts.count
        stats.evictions = blockCounters.evictions
        stats.uncacheableBlocks = blockCounters.uncacheable
        stats.readAheadStarted = blockCounters.prefetches
        stats.indexReadAheadStarted = layoutCounters.prefetches
        stats.readAheadSkipped = io.readAheadSkipped
        return stats
    }

    /// Whole record batches of `stream` back to back, starting with the batch that contains
    /// `offset` (or the first batch after it), up to `maxBytes` but always at least one whole batch
    /// when any exists; empty when `offset` is at or past the last segment's end. `segments` come
    /// from `committedSegments(in:stream:from:)`. A failure after some batches were gathered ends
    /// the read with those batches (the next read, starting where this one ended, gets the error);
    /// a failure before any throws `CommittedReadError` (or `CancellationError`).
    public func read(stream: StreamID, from offset: Int64, maxBytes: Int, segments: [CommittedSegment]) async throws -> ByteBuffer {
        var next = offset
        var slices: [ByteBuffer] = []
        var total = 0
        let ordered = segments.sorted { $0.startOffset < $1.startOffset }
        do {
            try await collect(stream: stream, segments: ordered, maxBytes: maxBytes, next: &next, slices: &slices, total: &total)
        } catch let error as CommittedReadError where total > 0 {
            logger.debug("committed read stops early", metadata: ["stream.id": "\(stream)", "next": "\(next)", "error": "\(error)"])
        }
        if slices.count == 1 { return slices[0] }
        var out = ByteBufferAllocator().buffer(capacity: total)
        for slice in slices { out.writeImmutableBuffer(slice) }
        return out
    }

    /// Appends to `slices` the batches from `next` on, advancing `next` and `total`, until `maxBytes`
    /// or the segments run out.
    private func collect(
        stream: StreamID, segments ordered: [CommittedSegment], maxBytes: Int,
        next: inout Int64, slices: inout [ByteBuffer], total: inout Int
    ) async throws {
        let streamKey = UInt64(bitPattern: stream)
        segmentLoop: for (number, segment) in ordered.enumerated() where segment.endOffset > next {
            let target = max(next, segment.startOffset)
            let layout = try await layout(of: segment)
            let entries = layout.streams[streamKey] ?? []
            // The first block that can hold `target`; blocks of a stream are in offset order.
            var position = entries.partitioningIndex { $0.endOffset > target }
            guard position < entries.count, entries[position].firstOffset < segment.endOffset else {
                throw fail(CommittedReadError.corrupt(
                    objectId: segment.objectId, key: segment.key,
                    reason: "no block of stream \(stream) holds offsets \(target)..<\(segment.endOffset)"))
            }
            while position < entries.count, entries[position].firstOffset < segment.endOffset {
                let entry = entries[position]
                let data = try await block(entry, of: segment)
                readAhead(
                    after: position, in: entries, of: segment, stream: streamKey,
                    next: number + 1 < ordered.count ? ordered[number + 1] : nil)
                var batches = RecordSetIterator(data)
                while true {
                    let batch: RecordBatch?
                    do { batch = try batches.next() } catch {
                        throw fail(CommittedReadError.corrupt(objectId: segment.objectId, key: segment.key, reason: "block at \(entry.position): \(error)"))
                    }
                    guard let batch else { break }
                    guard batch.baseOffset >= entry.firstOffset, batch.lastOffset >= batch.baseOffset,
                          batch.nextOffset <= entry.endOffset
                    else {
                        throw fail(CommittedReadError.corrupt(
                            objectId: segment.objectId, key: segment.key,
                            reason: "batch \(batch.baseOffset)...\(batch.lastOffset) outside its block's offsets \(entry.firstOffset)..<\(entry.endOffset)"))
                    }
                    if batch.lastOffset < max(next, segment.startOffset) { continue }
                    if batch.baseOffset >= segment.endOffset { continue segmentLoop }
                    if total > 0, total + batch.sizeInBytes > maxBytes { break segmentLoop }
                    slices.append(batch.bytes)
                    total += batch.sizeInBytes
                    next = batch.nextOffset
                    if total >= maxBytes { break segmentLoop }
                }
                if batches.partialBatch != nil {
                    throw fail(CommittedReadError.corrupt(objectId: segment.objectId, key: segment.key, reason: "block at \(entry.position) ends inside a batch"))
                }
                position += 1
            }
        }
    }

    // MARK: - Loading

    private func layout(of segment: CommittedSegment) async throws -> ObjectLayout {
        do {
            return try await layouts.value(for: segment.objectId) { [self] in
                try await permits.acquire()
                defer { permits.release() }
                return try await loadLayout(of: segment)
            }
        } catch {
            throw fail(classify(error, segment))
        }
    }

    private func block(_ entry: BlockIndexEntry, of segment: CommittedSegment) async throws -> ByteBuffer {
        do {
            return try await blocks.value(for: BlockKey(objectId: segment.objectId, position: entry.position)) { [self] in
                try await permits.acquire()
                defer { permits.release() }
                return try await loadBlock(entry, of: segment)
            }
        } catch {
            throw fail(classify(error, segment))
        }
    }

    /// Starts background loads of the `readAheadBlocks` blocks after `position`, continuing into
    /// the next segment's object (its index first) when this one runs out: stream-set objects
    /// often hold only a block or two of a stream, so a sequential consumer crosses objects often.
    private func readAhead(
        after position: Int, in entries: [BlockIndexEntry], of segment: CommittedSegment, stream: UInt64, next: CommittedSegment?
    ) {
        let wanted = max(0, configuration.readAheadBlocks)
        guard wanted > 0 else { return }
        let following = entries[(position + 1)...].prefix { $0.firstOffset < segment.endOffset }.prefix(wanted)
        guard prefetchBlocks(following, of: segment) else { return }
        let remaining = wanted - following.count
        guard remaining > 0, let next else { return }
        if let layout = layouts.cachedValue(for: next.objectId) {
            prefetchBlocks(Self.firstBlocks(layout, stream: stream, of: next).prefix(remaining), of: next)
            return
        }
        guard permits.tryAcquire() else {
            io.withLockedValue { $0.readAheadSkipped += 1 }
            return
        }
        let started = layouts.prefetch(next.objectId) { [self] in
            let layout: ObjectLayout
            do {
                layout = try await loadLayout(of: next)
            } catch {
                permits.release()
                throw error
            }
            permits.release()
            prefetchBlocks(Self.firstBlocks(layout, stream: stream, of: next).prefix(remaining), of: next)
            return layout
        }
        if !started { permits.release() }
    }

    /// Starts background loads of `entries` not cached or loading yet. Read-ahead only takes
    /// permits that are free right now, so it never queues in front of a reader's demand GET.
    /// Returns false when it stopped for want of a permit.
    @discardableResult
    private func prefetchBlocks(_ entries: some Collection<BlockIndexEntry>, of segment: CommittedSegment) -> Bool {
        for entry in entries {
            let key = BlockKey(objectId: segment.objectId, position: entry.position)
            if blocks.contains(key) { continue }
            guard permits.tryAcquire() else {
                io.withLockedValue { $0.readAheadSkipped += 1 }
                return false
            }
            let started = blocks.prefetch(key) { [self] in
                defer { permits.release() }
                return try await loadBlock(entry, of: segment)
            }
            if !started { permits.release() }
        }
        return true
    }

    /// The blocks of `stream` a read of `segment` starts with, in order.
    private static func firstBlocks(_ layout: ObjectLayout, stream: UInt64, of segment: CommittedSegment) -> ArraySlice<BlockIndexEntry> {
        let entries = layout.streams[stream] ?? []
        let first = entries.partitioningIndex { $0.endOffset > segment.startOffset }
        return entries[first...].prefix { $0.firstOffset < segment.endOffset }
    }

    /// Fetches and decodes an object's footer and index; the caller holds a permit.
    private func loadLayout(of segment: CommittedSegment) async throws -> ObjectLayout {
        let size = Int(segment.objectSize)
        guard size >= ObjectFormat.footerSize else {
            throw ObjectStoreError.corrupt("\(size) bytes is too short for an object")
        }
        let start = max(0, size - max(ObjectFormat.footerSize, configuration.tailReadBytes))
        let tail = try await get(segment.key, range: start..<size)
        guard tail.readableBytes == size - start else {
            throw ObjectStoreError.corrupt("the store holds fewer than the \(size) bytes the metadata records")
        }
        let index: ObjectIndex
        if let decoded = try ObjectIndex.decode(tail: tail, objectSize: size) {
            index = decoded
        } else {
            let range = try ObjectIndex.indexRange(tail: tail, objectSize: size)
            index = try ObjectIndex.decode(index: try await get(segment.key, range: range), tail: tail, objectSize: size)
        }
        var streams: [UInt64: [BlockIndexEntry]] = [:]
        for entry in index.entries { streams[entry.streamID, default: []].append(entry) }
        for (stream, entries) in streams {
            let sorted = entries.sorted { $0.firstOffset < $1.firstOffset }
            for (earlier, later) in zip(sorted, sorted.dropFirst()) where later.firstOffset < earlier.endOffset {
                throw ObjectStoreError.corrupt("blocks of stream \(stream) overlap at offset \(later.firstOffset)")
            }
            streams[stream] = sorted
        }
        return ObjectLayout(streams: streams)
    }

    /// Fetches and verifies one block; the caller holds a permit.
    private func loadBlock(_ entry: BlockIndexEntry, of segment: CommittedSegment) async throws -> ByteBuffer {
        guard entry.position + UInt64(entry.length) <= UInt64(max(0, segment.objectSize)) else {
            throw ObjectStoreError.corrupt("block at \(entry.position) runs past the object's \(segment.objectSize) bytes")
        }
        let block = try await get(segment.key, range: entry.byteRange)
        try ObjectIndex.verify(block: block, entry: entry)
        return block
    }

    private func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
        io.withLockedValue {
            $0.gets += 1
            $0.inFlight += 1
            $0.maxInFlight = max($0.maxInFlight, $0.inFlight)
        }
        do {
            let data = try await store.get(key, range: range)
            io.withLockedValue { $0.inFlight -= 1 }
            return data
        } catch {
            io.withLockedValue {
                $0.inFlight -= 1
                $0.failures += 1
            }
            throw error
        }
    }

    // MARK: - Errors

    private func classify(_ error: any Error, _ segment: CommittedSegment) -> any Error {
        if let error = error as? CommittedReadError { return error }
        guard let error = error as? ObjectStoreError else { return error }
        switch error {
        case .notFound: return CommittedReadError.objectMissing(objectId: segment.objectId, key: segment.key)
        case .corrupt(let reason): return CommittedReadError.corrupt(objectId: segment.objectId, key: segment.key, reason: reason)
        case .invalidRange(_, let range):
            return CommittedReadError.corrupt(
                objectId: segment.objectId, key: segment.key,
                reason: "range \(range.lowerBound)..<\(range.upperBound) is past the stored object's end")
        default: return CommittedReadError.store(objectId: segment.objectId, key: segment.key, error)
        }
    }

    private func fail(_ error: any Error) -> any Error {
        switch error as? CommittedReadError {
        case .corrupt?:
            logger.error("committed object failed verification", metadata: ["error": "\(error)"])
        case .objectMissing?:
            logger.debug("committed object missing; metadata is stale", metadata: ["error": "\(error)"])
        case .store?:
            logger.warning("committed read failed", metadata: ["error": "\(error)"])
        case nil:
            break
        }
        return error
    }
}

extension Array {
    /// The index of the first element for which `belongsToSecondPart` holds, given that it holds
    /// for a suffix of the array (binary search).
    fileprivate func partitioningIndex(where belongsToSecondPart: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let middle = low + (high - low) / 2
            if belongsToSecondPart(self[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
