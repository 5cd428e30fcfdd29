import ClusterMetadata
import Foundation
import KafkaProtocol
@testable import KafkaTransport
import NIOCore
import ObjectStorage
import TestKit
import Testing
import WALWriterCore
@testable import WALWriterService

@Suite("WAL writer service", .serialized)
struct WALWriterServiceTests {
    @Test("append, read and fence over the wire; stale epoch and offset mismatch refused", arguments: [false, true])
    func appendReadFence(oneLoop: Bool) async throws {
        let harness = try await Harness(name: "wire")
        let writer = try await Writer(volume: harness.directory + "/wal", harness: harness, oneLoop: oneLoop)
        try await withCleanup {
            try await withTimeout(.seconds(60), "wire") {
                let stream: StreamID = 7
                let first = try await writer.append(stream, epoch: 3, base: 0, count: 5)
                #expect(first.errorCode == 0)
                let second = try await writer.append(stream, epoch: 3, base: 5, count: 2)
                #expect(second.errorCode == 0)
                #expect(second.lsn > first.lsn)

                let mismatch = try await writer.append(stream, epoch: 3, base: 9, count: 1)
                #expect(mismatch.errorCode == KafkaErrorCode.offsetOutOfRange.rawValue)
                #expect(mismatch.expectedBaseOffset == 7)

                let read = try await writer.read(stream, from: 5)
                #expect(read.errorCode == 0)
                #expect(read.batches == recordBatch(baseOffset: 5, count: 2, timestamp: 1_005))
                let all = try await writer.read(stream, from: 0)
                var expected = recordBatch(baseOffset: 0, count: 5, timestamp: 1_000)
                var tail = recordBatch(baseOffset: 5, count: 2, timestamp: 1_005)
                expected.writeBuffer(&tail)
                #expect(all.batches == expected)
                var reversed = WALAppendRequest()
                reversed.streamId = stream
                reversed.epoch = 3
                reversed.baseOffset = 7
                reversed.lastOffset = 6
                reversed.batches = recordBatch(baseOffset: 7, count: 1, timestamp: 0)
                #expect(try await writer.call(reversed, .wALAppend, as: WALAppendResponse.self).errorCode == KafkaErrorCode.invalidRequest.rawValue)
                var tiny = WALReadRequest()
                tiny.streamId = stream
                tiny.fromOffset = 0
                tiny.maxBytes = -1
                // A non-positive limit still returns the first whole append.
                #expect(try await writer.call(tiny, .wALRead, as: WALReadResponse.self).batches == recordBatch(baseOffset: 0, count: 5, timestamp: 1_000))
                let missing = try await writer.read(99, from: 0)
                #expect(missing.errorCode == KafkaErrorCode.offsetNotAvailable.rawValue)

                var fence = WALFenceRequest()
                fence.streamId = stream
                fence.epoch = 4
                let fenced = try await writer.call(fence, .wALFence, as: WALFenceResponse.self)
                #expect(fenced.errorCode == 0)
                #expect(fenced.durableEndOffset == 7)

                let stale = try await writer.append(stream, epoch: 3, base: 7, count: 1)
                #expect(stale.errorCode == KafkaErrorCode.fencedLeaderEpoch.rawValue)
                #expect(stale.currentEpoch == 4)
                let fresh = try await writer.append(stream, epoch: 4, base: 7, count: 1)
                #expect(fresh.errorCode == 0)

                fence.epoch = 2
                let backwards = try await writer.call(fence, .wALFence, as: WALFenceResponse.self)
                #expect(backwards.errorCode == KafkaErrorCode.fencedLeaderEpoch.rawValue)
                #expect(backwards.currentEpoch == 4)
            }
        } cleanup: {
            await writer.stop()
            await harness.stop()
        }
    }

    @Test("appends accepted in order complete together and are all durable in that order")
    func orderedAcceptThenConcurrentCompletion() async throws {
        let directory = try temporaryDirectory("ordered")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try await WALEngine.open(configuration: .init(directory: directory, segmentSize: 1 << 20, zeroFillSegments: false), logger: testLogger)
        let handler = WALRequestHandler(engine: engine, uploader: nil, logger: testLogger)
        let connection = ConnectionInfo(id: 1, remoteAddress: nil)
        try await withTimeout(.seconds(30), "ordered") {
            var pending: [KafkaPendingResponse] = []
            var expected = ByteBuffer()
            // accept() is the order-sensitive step: every append is enqueued before any completion runs.
            for index in 0..<50 {
                var request = WALAppendRequest()
                request.streamId = 11
                request.baseOffset = Int64(index)
                request.lastOffset = Int64(index)
                request.batches = recordBatch(baseOffset: Int64(index), count: 1, timestamp: Int64(index))
                var batch = request.batches
                expected.writeBuffer(&batch)
                var body = ByteBuffer()
                try request.encode(to: &body, version: 0)
                let frame = KafkaRequestFrame(
                    apiKey: ApiKey.wALAppend.rawValue, apiVersion: 0, correlationId: Int32(index), clientId: nil,
                    headerVersion: ApiKey.wALAppend.requestHeaderVersion(0), body: body)
                pending.append(await handler.accept(frame, connection: connection))
            }
            let codes = try await withThrowingTaskGroup(of: Int16.self) { group in
                for response in pending {
                    group.addTask {
                        guard case .later(let complete) = response.storage, case .respond(var body, _) = await complete() else {
                            throw TestFailure("append must be answered later with a body")
                        }
                        return try WALAppendResponse(from: &body, version: 0).errorCode
                    }
                }
                var all: [Int16] = []
                for try await code in group { all.append(code) }
                return all
            }
            #expect(codes == Array(repeating: 0, count: 50))
            let read = try await engine.read(stream: 11, from: 0, maxBytes: 1 << 20)
            var joined = ByteBuffer()
            for var batch in read { joined.writeBuffer(&batch) }
            #expect(joined == expected)
        }
        await engine.close()
    }

    @Test("flush uploads one object, commits every stream's range and trims the WAL")
    func uploadCommits() async throws {
        let harness = try await Harness(name: "upload")
        let writer = try await Writer(volume: harness.directory + "/wal", harness: harness)
        try await withCleanup {
            try await withTimeout(.seconds(60), "upload") {
                let (a, epochA) = try await harness.createStream("alpha")
                let (b, epochB) = try await harness.createStream("beta")
                var expectedA = ByteBuffer()
                var expectedB = ByteBuffer()
                for index in 0..<4 {
                    let base = Int64(index * 3)
                    #expect(try await writer.append(a, epoch: epochA, base: base, count: 3).errorCode == 0)
                    var batch = recordBatch(baseOffset: base, count: 3, timestamp: 1_000 + base)
                    expectedA.writeBuffer(&batch)
                    #expect(try await writer.append(b, epoch: epochB, base: Int64(index), count: 1).errorCode == 0)
                    var one = recordBatch(baseOffset: Int64(index), count: 1, timestamp: 1_000 + Int64(index))
                    expectedB.writeBuffer(&one)
                }
                let putsBefore = harness.store.stats.snapshot.requests
                let flushed = try await writer.call(WALFlushRequest(), .wALFlush, as: WALFlushResponse.self)
                #expect(flushed.errorCode == 0, "\(flushed.errorMessage ?? "")")

                #expect(try await harness.stream(a).committedEnd == 12)
                #expect(try await harness.stream(b).committedEnd == 4)
                let state = await harness.follower.state
                let objectsA = state.objects(covering: a, from: 0)
                let objectsB = state.objects(covering: b, from: 0)
                #expect(objectsA.count == 1)
                #expect(objectsA.map(\.objectId) == objectsB.map(\.objectId))
                #expect(harness.store.stats.snapshot.requests - putsBefore == 1)
                #expect(try await committedBytes(of: a, harness: harness) == expectedA)
                #expect(try await committedBytes(of: b, harness: harness) == expectedB)
                #expect(await writer.engine.stats().durableUntrimmedBytes == 0)
                let gone = try await writer.read(a, from: 0)
                #expect(gone.errorCode == KafkaErrorCode.offsetNotAvailable.rawValue)

                // Data of a stream the controller does not have (a deleted topic) is dropped, not left to block trims.
                #expect(try await writer.append(987_654, epoch: 0, base: 0, count: 1).errorCode == 0)
                #expect(try await writer.call(WALFlushRequest(), .wALFlush, as: WALFlushResponse.self).errorCode == 0)
                #expect(await writer.engine.stats().durableUntrimmedBytes == 0)
                #expect(await harness.follower.state.objects(covering: 987_654, from: 0).isEmpty)

                // Appends continue after the trim at the committed end.
                #expect(try await writer.append(a, epoch: epochA, base: 12, count: 1).errorCode == 0)
            }
        } cleanup: {
            await writer.stop()
            await harness.stop()
        }
    }

    @Test("a restarted writer replays its volume and uploads what was not uploaded")
    func restartReplaysAndUploads() async throws {
        let harness = try await Harness(name: "restart")
        let volume = harness.directory + "/wal"
        try await withCleanup {
            try await withTimeout(.seconds(90), "restart") {
                let (stream, epoch) = try await harness.createStream("gamma")
                var expected = ByteBuffer()
                let first = try await Writer(volume: volume, harness: harness)
                for index in 0..<3 {
                    #expect(try await first.append(stream, epoch: epoch, base: Int64(index * 2), count: 2).errorCode == 0)
                    var batch = recordBatch(baseOffset: Int64(index * 2), count: 2, timestamp: 1_000 + Int64(index * 2))
                    expected.writeBuffer(&batch)
                }
                #expect(try await first.call(WALFlushRequest(), .wALFlush, as: WALFlushResponse.self).errorCode == 0)
                for index in 3..<6 {
                    #expect(try await first.append(stream, epoch: epoch, base: Int64(index * 2), count: 2).errorCode == 0)
                    var batch = recordBatch(baseOffset: Int64(index * 2), count: 2, timestamp: 1_000 + Int64(index * 2))
                    expected.writeBuffer(&batch)
                }
                await first.stop()

                let second = try await Writer(volume: volume, harness: harness)
                let replayed = try await second.read(stream, from: 6)
                #expect(replayed.errorCode == 0)
                #expect(replayed.batches.readableBytes > 0)
                #expect(try await second.call(WALFlushRequest(), .wALFlush, as: WALFlushResponse.self).errorCode == 0)
                #expect(try await harness.stream(stream).committedEnd == 12)
                #expect(try await committedBytes(of: stream, harness: harness) == expected)
                await second.stop()
            }
        } cleanup: {
            await harness.stop()
        }
    }

    @Test("a tail fenced by a newer epoch is committed under the controller's current epoch")
    func fencedTailCommitsUnderNewEpoch() async throws {
        let harness = try await Harness(name: "fenced")
        let writer = try await Writer(volume: harness.directory + "/wal", harness: harness)
        try await withCleanup {
            try await withTimeout(.seconds(60), "fenced") {
                let (stream, epoch) = try await harness.createStream("delta")
                #expect(try await writer.append(stream, epoch: epoch, base: 0, count: 4).errorCode == 0)
                // A new leader takes the stream: the controller's epoch moves, then the WAL is fenced with it.
                // The first broker to register is placed as the leaderless partition's leader, which bumps the epoch.
                _ = try await harness.client.register(
                    NodeRegistration(id: 5, kind: .broker, zone: "a", listener: "127.0.0.1:1", admin: "127.0.0.1:2"))
                let record = try await harness.stream(stream)
                #expect(record.epoch == epoch + 1)
                var fence = WALFenceRequest()
                fence.streamId = stream
                fence.epoch = record.epoch
                #expect(try await writer.call(fence, .wALFence, as: WALFenceResponse.self).durableEndOffset == 4)
                let flushed = try await writer.call(WALFlushRequest(), .wALFlush, as: WALFlushResponse.self)
                #expect(flushed.errorCode == 0, "\(flushed.errorMessage ?? "")")
                #expect(try await harness.stream(stream).committedEnd == 4)
            }
        } cleanup: {
            await writer.stop()
            await harness.stop()
        }
    }

    @Test("a store outage delays uploads without losing or reordering data; the size trigger uploads before the interval")
    func storeOutageThenRecovery() async throws {
        let harness = try await Harness(name: "outage")
        let store = FlakyStore(harness.store)
        // An interval far beyond the test's limits: only the size trigger can start these uploads.
        try await withUploader(harness, store: store, interval: .seconds(3600), thresholdBytes: 1, limit: .seconds(60)) { engine, _ in
            let (stream, epoch) = try await harness.createStream("outage")
            var expected = ByteBuffer()
            for offset in Int64(0)..<20 {
                var batch = recordBatch(baseOffset: offset, count: 1, timestamp: offset)
                _ = try await engine.append(stream: UInt64(stream), epoch: epoch, baseOffset: offset, lastOffset: offset, batches: batch)
                expected.writeBuffer(&batch)
            }
            #expect(await waitUntil(timeout: .seconds(10)) { store.failedPuts.withLock { $0 } >= 2 })
            #expect(try await harness.stream(stream).committedEnd == 0)
            // Appends keep working during the outage.
            for offset in Int64(20)..<30 {
                var batch = recordBatch(baseOffset: offset, count: 1, timestamp: offset)
                _ = try await engine.append(stream: UInt64(stream), epoch: epoch, baseOffset: offset, lastOffset: offset, batches: batch)
                expected.writeBuffer(&batch)
            }
            store.failing.withLock { $0 = false }
            #expect(try await waitForCommittedEnd(stream, 30, harness: harness) == 30)
            #expect(try await committedBytes(of: stream, harness: harness) == expected)
        }
    }

    @Test("a controller outage delays uploads; appends keep working and everything commits once it is back")
    func controllerOutageThenRecovery() async throws {
        let harness = try await Harness(name: "controller-outage")
        try await withUploader(harness, interval: .milliseconds(20), thresholdBytes: 1 << 20, limit: .seconds(90)) { engine, uploader in
            let (stream, epoch) = try await harness.createStream("outage")
            var expected = ByteBuffer()
            func append(_ offset: Int64) async throws {
                var batch = recordBatch(baseOffset: offset, count: 1, timestamp: offset)
                _ = try await engine.append(stream: UInt64(stream), epoch: epoch, baseOffset: offset, lastOffset: offset, batches: batch)
                expected.writeBuffer(&batch)
            }
            await harness.stopController()
            let failuresBefore = await uploader.failedAttempts
            for offset in Int64(0)..<10 { try await append(offset) }
            #expect(await waitUntil(timeout: .seconds(20)) { await uploader.failedAttempts > failuresBefore })
            for offset in Int64(10)..<20 { try await append(offset) }
            #expect(await engine.stats().durableUntrimmedBytes > 0)
            try await harness.restartController()
            #expect(try await waitForCommittedEnd(stream, 20, harness: harness) == 20)
            #expect(try await committedBytes(of: stream, harness: harness) == expected)
        }
    }

    @Test("malformed and unknown requests close the connection instead of crashing")
    func malformedRequests() async throws {
        let directory = try temporaryDirectory("malformed")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try await WALEngine.open(configuration: .init(directory: directory, segmentSize: 1 << 20, zeroFillSegments: false), logger: testLogger)
        let handler = WALRequestHandler(engine: engine, uploader: nil, logger: testLogger)
        let connection = ConnectionInfo(id: 1, remoteAddress: nil)
        for key in [ApiKey.wALAppend, .wALRead, .wALFence, .wALFlush, .produce] {
            let frame = KafkaRequestFrame(
                apiKey: key.rawValue, apiVersion: 0, correlationId: 1, clientId: nil, headerVersion: 2, body: ByteBuffer(bytes: [0xFF, 0x01]))
            let pending = await handler.accept(frame, connection: connection)
            guard case .ready(.close) = pending.storage else {
                Issue.record("\(key.name) with a malformed body was not refused")
                continue
            }
        }
        #expect(WALRequestHandler.resolver(ApiKey.wALAppend.rawValue, 1) == nil)
        #expect(WALRequestHandler.resolver(ApiKey.wALAppend.rawValue, 0) != nil)
        await engine.close()
    }

    @Test("maxTimestamp reads record batch headers and stops at truncated input")
    func maxTimestampParsing() {
        var two = recordBatch(baseOffset: 0, count: 1, timestamp: 50)
        var second = recordBatch(baseOffset: 1, count: 1, timestamp: 40)
        two.writeBuffer(&second)
        #expect(WALUploader.maxTimestamp(two) == 50)
        #expect(WALUploader.maxTimestamp(ByteBuffer(bytes: [1, 2, 3])) == -1)
        var lying = recordBatch(baseOffset: 0, count: 1, timestamp: 9)
        lying.setInteger(Int32.max, at: 8)
        #expect(WALUploader.maxTimestamp(lying) == 9)
    }
}
