@testable import BrokerCore
import ClusterMetadata
import NIOCore
import Testing

@Suite struct LogCacheTests {
    let a = PartitionKey(topic: "t", partition: 0)
    let b = PartitionKey(topic: "t", partition: 1)

    func bytes(_ count: Int) -> ByteBuffer { ByteBuffer(repeating: 1, count: count) }

    @Test func readsFromTheEntryHoldingTheOffset() {
        var cache = LogCache(capacity: 1 << 20)
        cache.append(a, baseOffset: 0, nextOffset: 10, bytes: bytes(100))
        cache.append(a, baseOffset: 10, nextOffset: 20, bytes: bytes(100))
        cache.append(a, baseOffset: 20, nextOffset: 30, bytes: bytes(100))
        #expect(cache.read(a, from: 15, maxBytes: 1000, limit: 30)?.count == 2)
        #expect(cache.read(a, from: 15, maxBytes: 1000, limit: 20)?.count == 1)
        #expect(cache.read(a, from: 0, maxBytes: 150, limit: 30)?.count == 1)
        #expect(cache.read(a, from: 0, maxBytes: 1, limit: 30)?.count == 1, "at least one entry")
        #expect(cache.read(b, from: 0, maxBytes: 1000, limit: 30) == nil)
    }

    @Test func staysWithinItsCapacityEvictingTheOldestFirst() {
        // Entries cost their buffer's capacity: eight 128-byte buffers fit in 1 KiB.
        #expect(LogCache.cost(bytes(128)) == 128)
        var cache = LogCache(capacity: 1024)
        for index in 0..<50 {
            let key = index % 2 == 0 ? a : b
            let base = Int64(index / 2) * 10
            cache.append(key, baseOffset: base, nextOffset: base + 10, bytes: bytes(128))
            #expect(cache.totalBytes <= 1024)
        }
        #expect(cache.totalBytes == 1024)
        #expect(cache.startOffset(a) == 210)
        #expect(cache.read(a, from: 0, maxBytes: 1000, limit: 1000) == nil, "evicted offsets are read elsewhere")
        #expect(cache.read(a, from: 240, maxBytes: 1000, limit: 1000)?.count == 1)
    }

    @Test func aGapDropsTheOlderEntries() {
        var cache = LogCache(capacity: 1 << 20)
        cache.append(a, baseOffset: 0, nextOffset: 10, bytes: bytes(100))
        cache.append(a, baseOffset: 15, nextOffset: 20, bytes: bytes(100))
        #expect(cache.startOffset(a) == 15)
        #expect(cache.totalBytes == LogCache.cost(bytes(100)))
        cache.drop(a)
        #expect(cache.totalBytes == 0)
        #expect(cache.startOffset(a) == nil)
    }
}
