import Foundation
import Logging
import NIOCore
import ObjectStorage
import TestKit
import Testing

@Suite("file:// object store")
struct FileObjectStoreTests {
    let directory: String
    let store: any ObjectStore

    init() throws {
        directory = try temporaryDirectory("objectstore")
        store = try makeObjectStore(url: "file://" + directory, logger: Logger(label: "test"))
    }

    @Test func putGetHeadDelete() async throws {
        try await Conformance.putGetHeadDelete(store, prefix: "p")
    }

    @Test func emptyObjects() async throws {
        try await Conformance.emptyObjects(store, prefix: "p")
    }

    @Test func rangedReads() async throws {
        try await Conformance.rangedReads(store, prefix: "p")
    }

    @Test func listingManyKeys() async throws {
        try await Conformance.listing(store, prefix: "p", count: 1_200)
    }

    @Test func conditionalCreateRace() async throws {
        try await Conformance.conditionalCreate(store, prefix: "p")
    }

    @Test func keysThatLookLikeFileNames() async throws {
        let keys = [".hidden", "..", "a%2Fb", "a/b", "with space", "ünïcode/ключ", "+plus"]
        for key in keys { try await store.put(key, ByteBuffer(string: key)) }
        for key in keys { #expect(try await store.get(key) == ByteBuffer(string: key)) }
        #expect(Set(try await store.list(prefix: "").map(\.key)) == Set(keys))
        #expect(try await store.list(prefix: "a").map(\.key) == ["a%2Fb", "a/b"])
        await #expect(throws: ObjectStoreError.self) { try await store.put("", ByteBuffer()) }
        await #expect(throws: ObjectStoreError.self) { try await store.put(String(repeating: "é", count: 200), ByteBuffer()) }
    }

    @Test func noTemporariesLeftBehind() async throws {
        for index in 0..<20 { try await store.put("k\(index)", Conformance.bytes(1_000)) }
        _ = try await store.putIfAbsent("k0", Conformance.bytes(10))
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(names.filter { $0.hasPrefix(".") }.isEmpty)
        #expect(names.count == 20)
    }

    @Test func staleTemporariesAreRemoved() async throws {
        let stale = directory + "/.tmp-1-dead"
        let fresh = directory + "/.tmp-1-alive"
        #expect(FileManager.default.createFile(atPath: stale, contents: Data([1, 2, 3])))
        #expect(FileManager.default.createFile(atPath: fresh, contents: Data([1])))
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -7_200)], ofItemAtPath: stale)
        try await store.put("kept", ByteBuffer(string: "v"))
        let fileStore = try #require(store as? FileObjectStore)
        #expect(try await fileStore.removeStaleTemporaries(olderThanSeconds: 3_600) == 1)
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(FileManager.default.fileExists(atPath: fresh))
        #expect(try await store.list(prefix: "").map(\.key) == ["kept"])
    }

    @Test func badURLs() {
        #expect(throws: ObjectStoreError.self) { try makeObjectStore(url: "file://relative/path", logger: Logger(label: "t")) }
        #expect(throws: ObjectStoreError.self) { try makeObjectStore(url: "ftp://x", logger: Logger(label: "t")) }
        #expect(throws: ObjectStoreError.self) { try makeObjectStore(url: "s3://bucket", logger: Logger(label: "t")) }
        #expect(throws: ObjectStoreError.self) { try S3Configuration(url: "s3://?endpoint=http://h:1", environment: ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"]) }
        let parsed = try? S3Configuration(
            url: "s3://my-bucket?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1",
            environment: ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"]
        )
        #expect(parsed?.bucket == "my-bucket")
        #expect(parsed?.endpoint == "http://127.0.0.1:9000")
        #expect(parsed?.region == "eu-west-1")
        let credentials = ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"]
        let tuned = try? S3Configuration(
            url: "s3://b1?endpoint=http://h:1&max_attempts=9&part_size=6291456&multipart_threshold=20000000&request_timeout_ms=1500",
            environment: credentials
        )
        #expect(tuned?.maxAttempts == 9)
        #expect(tuned?.partSize == 6 << 20)
        #expect(tuned?.multipartThreshold == 20_000_000)
        #expect(tuned?.requestTimeout == .milliseconds(1_500))
        #expect(throws: ObjectStoreError.self) { try S3Configuration(url: "s3://b1?endpoint=http://h:1&max_atempts=9", environment: credentials) }
        #expect(throws: ObjectStoreError.self) { try S3Configuration(url: "s3://b1?endpoint=http://h:1&part_size=1024", environment: credentials) }
        #expect(throws: ObjectStoreError.self) { try S3Configuration(url: "s3://b1?endpoint=http://h:1&threads=-1", environment: credentials) }
        #expect(throws: ObjectStoreError.self) { try S3Configuration(url: "s3://b1?endpoint=http://h:1&threads=100000000", environment: credentials) }
    }
}

@Suite("in-memory object store")
struct InMemoryObjectStoreTests {
    let store = InMemoryObjectStore()

    @Test func conformance() async throws {
        try await Conformance.putGetHeadDelete(store, prefix: "p")
        try await Conformance.emptyObjects(store, prefix: "p")
        try await Conformance.rangedReads(store, prefix: "p")
        try await Conformance.listing(store, prefix: "p", count: 300)
        try await Conformance.conditionalCreate(store, prefix: "p")
    }
}
