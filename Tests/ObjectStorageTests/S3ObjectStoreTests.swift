import Foundation
import Logging
import NIOCore
import ObjectStorage
import Testing

/// Everything that needs the shared SeaweedFS lives under this suite, so one server serves them all.
@Suite("S3 against SeaweedFS", SeaweedFSScope())
struct SeaweedFSTests {}

func uniquePrefix(_ name: String) -> String {
    "\(name)-\(UUID().uuidString.prefix(8).lowercased())"
}

extension SeaweedFSTests {
    @Suite("S3 conformance")
    struct S3Conformance {
        func store(_ configure: (inout S3Configuration) -> Void = { _ in }) throws -> S3ObjectStore {
            var configuration = try requireSeaweedFS().configuration()
            configure(&configuration)
            return try S3ObjectStore(configuration: configuration, logger: Logger(label: "s3-test"))
        }

        @Test func putGetHeadDelete() async throws {
            try await Conformance.putGetHeadDelete(try store(), prefix: uniquePrefix("basic"))
        }

        @Test func emptyObjects() async throws {
            try await Conformance.emptyObjects(try store(), prefix: uniquePrefix("empty"))
        }

        @Test func rangedReads() async throws {
            try await Conformance.rangedReads(try store(), prefix: uniquePrefix("ranged"))
        }

        @Test func listingPaginatesAndBatchDeletesInChunks() async throws {
            let store = try store {
                $0.listPageSize = 100
                $0.deleteBatchSize = 150
            }
            try await Conformance.listing(store, prefix: uniquePrefix("list"), count: 450)
            // 450 keys at 100 per page: 5 list pages at least were requested.
            #expect(store.stats.snapshot.requests > 450 + 5)
        }

        @Test func conditionalCreateRace() async throws {
            try await Conformance.conditionalCreate(try store(), prefix: uniquePrefix("race"))
        }

        @Test func keysWithAwkwardCharacters() async throws {
            let store = try store()
            let prefix = uniquePrefix("chars")
            let keys = ["\(prefix)/a b/c", "\(prefix)/plus+and&amp", "\(prefix)/ünïcode/ключ", "\(prefix)/x=y?z", "\(prefix)/~tilde%41"]
            for key in keys { try await store.put(key, ByteBuffer(string: key)) }
            for key in keys { #expect(try await store.get(key) == ByteBuffer(string: key)) }
            #expect(Set(try await store.list(prefix: prefix + "/").map(\.key)) == Set(keys))
            try await store.delete(keys)
            #expect(try await store.list(prefix: prefix + "/").isEmpty)

            // Dot segments are part of the key: stored as such or refused (SeaweedFS refuses), never squashed.
            let dotted = "\(prefix)/dots/../x"
            if (try? await store.put(dotted, ByteBuffer(string: "dotted"))) != nil {
                #expect(try await store.get(dotted) == ByteBuffer(string: "dotted"))
                try await store.delete(dotted)
            }
            #expect(try await store.head("\(prefix)/x") == nil)
        }

        @Test func multipartUploadReadsBackIntact() async throws {
            let store = try store {
                $0.multipartThreshold = 5 << 20
                $0.partSize = 5 << 20
            }
            let key = uniquePrefix("multipart") + "/big"
            let data = Conformance.bytes(12 << 20 + 12_345)
            let before = store.stats.snapshot.requests
            try await store.put(key, data)
            // Create, three parts, complete.
            #expect(store.stats.snapshot.requests - before == 5)
            #expect(try await store.head(key)?.size == data.readableBytes)
            #expect(try await store.get(key) == data)
            #expect(try await store.get(key, range: (5 << 20) - 10..<(5 << 20) + 10) == data.getSlice(at: (5 << 20) - 10, length: 20))
            #expect(try await store.listMultipartUploads(prefix: key).isEmpty)
            try await store.delete(key)
        }

        @Test func objectIndexIsOneRangedGet() async throws {
            let store = try store()
            var writer = ObjectWriter(blockSize: 64 << 10)
            for stream in UInt64(0)..<50 {
                try writer.append(
                    streamID: stream, firstOffset: 0, endOffset: 10, recordCount: 10, maxTimestamp: 0,
                    batches: Conformance.bytes(20_000, seed: UInt8(stream))
                )
            }
            let object = try writer.finish()
            let key = uniquePrefix("format") + "/" + ObjectKey.make(id: 7, kind: .streamSet)
            try await store.put(key, object)
            let before = store.stats.snapshot
            let index = try await ObjectReader(store: store).index(key: key, objectSize: object.readableBytes)
            #expect(store.stats.snapshot.requests - before.requests == 1)
            #expect(store.stats.snapshot.rangedGets - before.rangedGets == 1)
            #expect(index.entries.count == 50)
            let block = try await ObjectReader(store: store).block(key: key, entry: index.entries[17])
            #expect(block == Conformance.bytes(20_000, seed: 17))
            try await store.delete(key)
        }

        @Test func connectionsAreReused() async throws {
            let store = try store { $0.workerThreads = 2 }
            let key = uniquePrefix("keepalive") + "/k"
            try await store.put(key, ByteBuffer(string: "v"))
            for _ in 0..<40 { _ = try await store.get(key) }
            // One connection per worker thread at most, not one per request.
            #expect(store.stats.snapshot.connectionsOpened <= 2)
            #expect(store.stats.snapshot.requests == 41)
            try await store.delete(key)
        }

        @Test func wrongSecretIsRejectedWith403() async throws {
            let server = try requireSeaweedFS()
            var configuration = server.configuration(secret: "not-the-secret")
            configuration.maxAttempts = 3
            let store = try S3ObjectStore(configuration: configuration, logger: Logger(label: "s3-test"))
            do {
                try await store.put(uniquePrefix("forbidden") + "/x", ByteBuffer(string: "x"))
                Issue.record("a request signed with the wrong secret was accepted")
            } catch let ObjectStoreError.http(status, code, _) {
                #expect(status == 403)
                #expect(code == "SignatureDoesNotMatch")
            }
            // 403 is final: no retries.
            #expect(store.stats.snapshot.retries == 0)
        }

        @Test func urlFactoryMakesAWorkingStore() async throws {
            let server = try requireSeaweedFS()
            setenv("AWS_ACCESS_KEY_ID", SeaweedFS.accessKey, 1)
            setenv("AWS_SECRET_ACCESS_KEY", SeaweedFS.secretKey, 1)
            let store = try makeObjectStore(url: "s3://\(SeaweedFS.bucket)?endpoint=\(server.endpoint)&region=us-east-1", logger: Logger(label: "t"))
            let key = uniquePrefix("factory") + "/k"
            #expect(try await store.putIfAbsent(key, ByteBuffer(string: "v")))
            #expect(try await store.get(key) == ByteBuffer(string: "v"))
            try await store.delete(key)
        }
    }
}
