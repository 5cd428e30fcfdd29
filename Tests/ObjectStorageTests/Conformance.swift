import Foundation
import NIOCore
import ObjectStorage
import Testing

/// Behaviour every ObjectStore must show; each check runs against a fresh key prefix.
enum Conformance {
    static func bytes(_ count: Int, seed: UInt8 = 1) -> ByteBuffer {
        var value = UInt32(seed) &* 2_654_435_761
        let array = [UInt8](unsafeUninitializedCapacity: count) { storage, initialized in
            for index in 0..<count {
                value = value &* 1_103_515_245 &+ 12345
                storage[index] = UInt8(truncatingIfNeeded: value >> 16)
            }
            initialized = count
        }
        return ByteBuffer(bytes: array)
    }

    static func putGetHeadDelete(_ store: any ObjectStore, prefix: String) async throws {
        let key = "\(prefix)/a/b/object-1"
        let data = bytes(10_000)
        try await store.put(key, data)
        #expect(try await store.get(key) == data)
        let info = try #require(try await store.head(key))
        #expect(info.size == 10_000)
        #expect(!info.etag.isEmpty)

        let replacement = bytes(3_000, seed: 9)
        try await store.put(key, replacement)
        #expect(try await store.get(key) == replacement)
        #expect(try await store.head(key)?.size == 3_000)

        try await store.delete(key)
        #expect(try await store.head(key) == nil)
        await #expect(throws: ObjectStoreError.notFound(key: key)) { try await store.get(key) }
        await #expect(throws: ObjectStoreError.notFound(key: key)) { try await store.get(key, range: 0..<10) }
        // Deleting again is not an error.
        try await store.delete(key)
    }

    static func emptyObjects(_ store: any ObjectStore, prefix: String) async throws {
        let key = "\(prefix)/empty"
        try await store.put(key, ByteBuffer())
        #expect(try await store.get(key).readableBytes == 0)
        #expect(try await store.head(key)?.size == 0)
        #expect(try await store.get(key, range: 0..<0).readableBytes == 0)
        try await store.delete(key)
    }

    static func rangedReads(_ store: any ObjectStore, prefix: String) async throws {
        let key = "\(prefix)/ranged"
        let data = bytes(5_000)
        try await store.put(key, data)
        #expect(try await store.get(key, range: 0..<1) == data.getSlice(at: 0, length: 1))
        #expect(try await store.get(key, range: 100..<4_000) == data.getSlice(at: 100, length: 3_900))
        #expect(try await store.get(key, range: 4_999..<5_000) == data.getSlice(at: 4_999, length: 1))
        // Past the end: short read, as S3 does.
        #expect(try await store.get(key, range: 4_000..<9_000) == data.getSlice(at: 4_000, length: 1_000))
        await #expect(throws: ObjectStoreError.invalidRange(key: key, range: 5_000..<5_010)) {
            try await store.get(key, range: 5_000..<5_010)
        }
        try await store.delete(key)
    }

    static func listing(_ store: any ObjectStore, prefix: String, count: Int) async throws {
        var keys: [String] = []
        for index in 0..<count {
            keys.append("\(prefix)/list/\(String(format: "%05d", index))")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            for _ in 0..<8 {
                guard next < keys.count else { break }
                let key = keys[next]
                next += 1
                group.addTask { try await store.put(key, ByteBuffer(string: key)) }
            }
            while try await group.next() != nil {
                guard next < keys.count else { continue }
                let key = keys[next]
                next += 1
                group.addTask { try await store.put(key, ByteBuffer(string: key)) }
            }
        }
        try await store.put("\(prefix)/other", ByteBuffer(string: "x"))
        let listed = try await store.list(prefix: "\(prefix)/list/")
        #expect(listed.map(\.key) == keys)
        #expect(listed.allSatisfy { $0.size == $0.key.utf8.count })
        #expect(try await store.list(prefix: "\(prefix)/list/0001").count == min(max(0, count - 10), 10))
        #expect(try await store.list(prefix: "\(prefix)/nothing-here").isEmpty)

        try await store.delete(keys + ["\(prefix)/never-existed"])
        #expect(try await store.list(prefix: "\(prefix)/list/").isEmpty)
        #expect(try await store.list(prefix: "\(prefix)/").map(\.key) == ["\(prefix)/other"])
        try await store.delete("\(prefix)/other")
    }

    static func conditionalCreate(_ store: any ObjectStore, prefix: String, racers: Int = 8) async throws {
        let key = "\(prefix)/conditional"
        let winners = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for racer in 0..<racers {
                group.addTask { (racer, try await store.putIfAbsent(key, bytes(2_000, seed: UInt8(racer)))) }
            }
            var results: [(Int, Bool)] = []
            for try await result in group { results.append(result) }
            return results.filter(\.1).map(\.0)
        }
        #expect(winners.count == 1)
        let winner = try #require(winners.first)
        #expect(try await store.get(key) == bytes(2_000, seed: UInt8(winner)))
        #expect(try await store.putIfAbsent(key, bytes(10)) == false)
        #expect(try await store.get(key) == bytes(2_000, seed: UInt8(winner)))
        try await store.delete(key)
        #expect(try await store.putIfAbsent(key, bytes(10)) == true)
        try await store.delete(key)
    }
}
