import Foundation
import Logging
import NIOCore
import ObjectStorage
import Testing

extension SeaweedFSTests {
    @Suite("S3 faults through an injecting proxy")
    struct Faults {
        /// A store talking through a fresh proxy, and a direct one to check what really got stored.
        func setUp(_ configure: (inout S3Configuration) -> Void = { _ in }) async throws -> (FaultProxy, S3ObjectStore, S3ObjectStore) {
            let server = try requireSeaweedFS()
            let proxy = try await FaultProxy.start(upstreamPort: server.s3Port)
            var configuration = server.configuration(endpoint: proxy.endpoint)
            // Generous, so a loaded machine does not add timeouts of its own to the injected faults.
            configuration.requestTimeout = .seconds(30)
            configure(&configuration)
            let viaProxy = try S3ObjectStore(configuration: configuration, logger: Logger(label: "s3-faults"))
            let direct = try S3ObjectStore(configuration: server.configuration(), logger: Logger(label: "s3-direct"))
            return (proxy, viaProxy, direct)
        }

        @Test func transientFailuresAreRetried() async throws {
            let (proxy, store, direct) = try await setUp()
            defer { Task { try await proxy.stop() } }
            let key = uniquePrefix("retry") + "/k"
            let data = Conformance.bytes(50_000)
            proxy.inject([.status(503, code: "SlowDown"), .status(500, code: "InternalError"), .drop])
            try await store.put(key, data)
            #expect(proxy.injected == 3)
            #expect(store.stats.snapshot.retries == 3)
            #expect(try await direct.get(key) == data)

            proxy.inject([.status(503, code: "SlowDown"), .drop])
            #expect(try await store.get(key) == data)
            #expect(store.stats.snapshot.retries == 5)

            // 429 and 408 are throttling and are retried; other 4xx are final.
            proxy.inject([.status(429, code: "TooManyRequests"), .status(408, code: "RequestTimeout")])
            #expect(try await store.head(key)?.size == data.readableBytes)
            #expect(store.stats.snapshot.retries == 7)
            proxy.inject([.status(400, code: "InvalidArgument")])
            await #expect(throws: ObjectStoreError.http(status: 400, code: "InvalidArgument", message: "injected by the test proxy")) {
                try await store.get(key)
            }
            #expect(store.stats.snapshot.retries == 7)
            try await direct.delete(key)
        }

        @Test func stalledRequestTimesOutAndIsRetried() async throws {
            let (proxy, store, direct) = try await setUp { $0.requestTimeout = .seconds(1) }
            defer { Task { try await proxy.stop() } }
            let key = uniquePrefix("stall") + "/k"
            try await direct.put(key, ByteBuffer(string: "value"))
            proxy.inject([.stall])
            let clock = ContinuousClock()
            let started = clock.now
            #expect(try await store.get(key) == ByteBuffer(string: "value"))
            #expect(clock.now - started >= .milliseconds(900))
            #expect(proxy.injected == 1)
            // At least the stalled attempt; a slow retry on a busy machine may time out as well.
            #expect(store.stats.snapshot.retries >= 1)
            try await direct.delete(key)
        }

        @Test func exhaustedRetriesSurfaceTheError() async throws {
            let (proxy, store, _) = try await setUp { $0.maxAttempts = 3 }
            defer { Task { try await proxy.stop() } }
            let key = uniquePrefix("exhaust") + "/k"
            proxy.inject(Array(repeating: .status(503, code: "SlowDown"), count: 3))
            await #expect(throws: ObjectStoreError.http(status: 503, code: "SlowDown", message: "injected by the test proxy")) {
                try await store.put(key, ByteBuffer(string: "v"))
            }
            #expect(proxy.requests == 3)
            #expect(store.stats.snapshot.retries == 2)
            #expect(store.stats.snapshot.failures == 1)

            proxy.inject(Array(repeating: .drop, count: 3))
            await #expect(throws: ObjectStoreError.self) { try await store.get(key) }
            #expect(proxy.pendingFaults == 0)
        }

        @Test func putCutMidBodyNeverLeavesAPartialObject() async throws {
            let (proxy, store, direct) = try await setUp { $0.maxAttempts = 1 }
            defer { Task { try await proxy.stop() } }
            let key = uniquePrefix("midbody") + "/k"
            let data = Conformance.bytes(2 << 20)
            proxy.inject([.dropMidBody])
            await #expect(throws: ObjectStoreError.self) { try await store.put(key, data) }
            // Absent or complete, never a prefix.
            if let info = try await direct.head(key) {
                #expect(info.size == data.readableBytes)
                #expect(try await direct.get(key) == data)
            }

            let (retryProxy, retrying, _) = try await setUp()
            defer { Task { try await retryProxy.stop() } }
            retryProxy.inject([.dropMidBody])
            try await retrying.put(key, data)
            #expect(retrying.stats.snapshot.retries == 1)
            #expect(try await direct.get(key) == data)
            try await direct.delete(key)
        }

        @Test func failedMultipartUploadIsAborted() async throws {
            let (proxy, store, direct) = try await setUp {
                $0.multipartThreshold = 5 << 20
                $0.partSize = 5 << 20
                $0.maxAttempts = 2
                // One part at a time so the injected faults hit a known part.
                $0.multipartConcurrency = 1
            }
            defer { Task { try await proxy.stop() } }
            let key = uniquePrefix("abort") + "/big"
            // Create passes, the second part fails on both attempts; the abort passes.
            proxy.inject([.pass, .pass, .status(500, code: "InternalError"), .status(500, code: "InternalError")])
            await #expect(throws: ObjectStoreError.http(status: 500, code: "InternalError", message: "injected by the test proxy")) {
                try await store.put(key, Conformance.bytes(11 << 20))
            }
            #expect(try await direct.head(key) == nil)
            #expect(try await direct.listMultipartUploads(prefix: key).isEmpty)
            #expect(proxy.requests == 5)
        }

        @Test func conditionalCreateWhoseAnswerWasLostStillReportsSuccess() async throws {
            let (proxy, store, direct) = try await setUp()
            defer { Task { try await proxy.stop() } }
            let key = uniquePrefix("ambiguous") + "/k"
            let data = Conformance.bytes(4_000)
            // The first attempt creates the object but its answer never arrives; the retry gets 412.
            proxy.inject([.dropResponse])
            #expect(try await store.putIfAbsent(key, data) == true)
            #expect(store.stats.snapshot.retries == 1)
            #expect(try await direct.get(key) == data)

            // Someone else's object under the key is still "already existed" after an ambiguous attempt.
            proxy.inject([.dropResponse])
            #expect(try await store.putIfAbsent(key, Conformance.bytes(4_000, seed: 77)) == false)
            #expect(try await direct.get(key) == data)
            try await direct.delete(key)
        }
    }
}
