import ClusterMetadata
import ControllerClient
import ControllerCore
import Foundation
import KafkaProtocol
import KafkaTransport
import Logging
import Synchronization
import NIOCore
import NIOPosix
import ObjectStorage
import TestKit
import WALWriterCore
@testable import WALWriterService

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A Kafka record batch v2 header followed by `payload` (the WAL and the object format only read the header fields set here).
func recordBatch(baseOffset: Int64, count: Int32, timestamp: Int64, payload: [UInt8] = Array("x".utf8)) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeInteger(baseOffset)
    let lengthIndex = buffer.writerIndex
    buffer.writeInteger(Int32(0))
    buffer.writeInteger(Int32(0))  // partition leader epoch
    buffer.writeInteger(UInt8(2))  // magic
    buffer.writeInteger(UInt32(0))  // crc (not checked here)
    buffer.writeInteger(Int16(0))  // attributes
    buffer.writeInteger(count - 1)  // last offset delta
    buffer.writeInteger(timestamp)  // base timestamp
    buffer.writeInteger(timestamp)  // max timestamp
    buffer.writeInteger(Int64(-1))  // producer id
    buffer.writeInteger(Int16(-1))
    buffer.writeInteger(Int32(-1))
    buffer.writeInteger(count)
    buffer.writeBytes(payload)
    buffer.setInteger(Int32(buffer.readableBytes - 12), at: lengthIndex)
    return buffer
}

/// A single-voter controller, a WAL engine, an uploader and the WAL writer's server on loopback.
final class Harness: Sendable {
    let directory: String
    let controller: Mutex<ControllerService>
    let configuration: ControllerConfiguration
    let controllerEndpoint: KafkaEndpoint
    let client: ControllerClient
    let follower: MetadataFollower
    let followerTask: Task<Void, Never>
    let store: any ObjectStore

    init(name: String) async throws {
        directory = try temporaryDirectory(name)
        let port = try freePort()
        let endpoint = KafkaEndpoint(host: "127.0.0.1", port: port)
        let configuration = ControllerConfiguration(
            nodeId: 1, voters: [ControllerVoter(id: 1, endpoint: endpoint)], listenPort: port,
            dataDirectory: directory + "/controller", sessionTimeout: .seconds(6),
            electionTimeoutMin: .milliseconds(100), electionTimeoutMax: .milliseconds(200),
            raftHeartbeatInterval: .milliseconds(20), tickInterval: .milliseconds(10), appliedStateInterval: 50)
        try FileManager.default.createDirectory(atPath: directory + "/controller", withIntermediateDirectories: true)
        self.configuration = configuration
        controller = Mutex(try await ControllerService.start(configuration: configuration, logger: testLogger))
        controllerEndpoint = endpoint
        client = ControllerClient(endpoints: [endpoint], logger: testLogger, requestTimeout: .seconds(1), retryDeadline: .seconds(2))
        follower = MetadataFollower(client: client, logger: testLogger, maxWait: .milliseconds(200))
        let follower = follower
        followerTask = Task { await follower.run() }
        store = try makeObjectStore(url: "file://\(directory)/objects", logger: testLogger)
    }

    /// Creates a one-partition topic and returns its stream id and epoch.
    func createStream(_ name: String) async throws -> (StreamID, LeaderEpoch) {
        var hash: UInt64 = 1469598103934665603
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 1099511628211 }
        let spec = TopicSpec(
            name: name, topicId: KafkaUUID(high: hash, low: ~hash | 1), partitionCount: 1, replicationFactor: 1, configs: [:], isInternal: false)
        let (_, index) = try await client.writeWithIndex(.createTopics([spec]))
        guard await follower.waitForVersion(index, timeout: .seconds(10)) else { throw TestFailure("metadata did not follow") }
        let state = await follower.state
        guard let stream = state.streams.values.first(where: { state.topic(id: $0.topicId)?.name == name }) else {
            throw TestFailure("stream of \(name) not found")
        }
        return (stream.id, stream.epoch)
    }

    /// The controller's current record of a stream.
    func stream(_ id: StreamID) async throws -> StreamRecord {
        let (_, index) = try await client.writeWithIndex(.expirePrepared(now: 0))
        guard await follower.waitForVersion(index, timeout: .seconds(10)) else { throw TestFailure("metadata did not follow") }
        guard let record = await follower.state.streams[id] else { throw TestFailure("no stream \(id)") }
        return record
    }

    /// Stops the controller (an outage); `restartController` brings it back on the same port and data.
    func stopController() async {
        await controller.withLock { $0 }.stop(transferLeadership: false)
    }

    func restartController() async throws {
        let restarted = try await ControllerService.start(configuration: configuration, logger: testLogger)
        controller.withLock { $0 = restarted }
    }

    func stop() async {
        followerTask.cancel()
        await controller.withLock { $0 }.stop(transferLeadership: false)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A running WAL writer (engine + uploader + server) over `volume`.
final class Writer: Sendable {
    let engine: WALEngine
    let uploader: WALUploader
    let server: KafkaServer<WALRequestHandler>
    let serverTask: Task<Void, any Error>
    let endpoint: KafkaEndpoint
    let transport: KafkaClient

    /// The writer's own one-thread loop group, when it runs the engine and every connection on one loop.
    let group: MultiThreadedEventLoopGroup?

    /// With `oneLoop` the engine and the server share one event loop, as in the service (one loop by
    /// default), so appends take the handler's on-loop path; otherwise they share the process's loops.
    init(volume: String, harness: Harness, oneLoop: Bool = false) async throws {
        let group = oneLoop ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        self.group = group
        engine = try await WALEngine.open(
            configuration: .init(directory: volume, segmentSize: 1 << 20, zeroFillSegments: false), logger: testLogger,
            eventLoop: group?.next())
        uploader = WALUploader(engine: engine, store: harness.store, controller: harness.client, metadata: harness.follower, logger: testLogger)
        var configuration = KafkaServerConfiguration(port: 0, headerVersionResolver: WALRequestHandler.resolver, shutdownGracePeriod: .seconds(1))
        if let group { configuration.eventLoopGroup = group }
        server = KafkaServer(
            configuration: configuration, handler: WALRequestHandler(engine: engine, uploader: uploader, logger: testLogger), logger: testLogger)
        let server = server
        serverTask = Task { try await server.run() }
        endpoint = KafkaEndpoint(host: "127.0.0.1", port: try await server.boundPort())
        transport = KafkaClient(logger: testLogger)
    }

    func call<Request: KafkaMessage, Response: KafkaMessage>(_ request: Request, _ key: ApiKey, as: Response.Type) async throws -> Response {
        var body = ByteBuffer()
        try request.encode(to: &body, version: 0)
        var reply = try await transport.send(
            to: endpoint, apiKey: key.rawValue, apiVersion: 0, headerVersion: key.requestHeaderVersion(0),
            responseHeaderVersion: key.responseHeaderVersion(0), clientId: "test", body: body, timeout: .seconds(30))
        return try Response(from: &reply, version: 0)
    }

    func append(_ stream: StreamID, epoch: Int32, base: Int64, count: Int32) async throws -> WALAppendResponse {
        var request = WALAppendRequest()
        request.streamId = stream
        request.epoch = epoch
        request.baseOffset = base
        request.lastOffset = base + Int64(count) - 1
        request.batches = recordBatch(baseOffset: base, count: count, timestamp: 1_000 + base)
        return try await call(request, .wALAppend, as: WALAppendResponse.self)
    }

    func read(_ stream: StreamID, from offset: Int64) async throws -> WALReadResponse {
        var request = WALReadRequest()
        request.streamId = stream
        request.fromOffset = offset
        request.maxBytes = 1 << 20
        return try await call(request, .wALRead, as: WALReadResponse.self)
    }

    func stop() async {
        await transport.closeAll()
        serverTask.cancel()
        _ = try? await serverTask.value
        await engine.close()
        try? await group?.shutdownGracefully()
    }
}

/// Every block of `stream` in the committed objects the metadata lists, concatenated in offset order.
func committedBytes(of stream: StreamID, harness: Harness) async throws -> ByteBuffer {
    let state = await harness.follower.state
    var joined = ByteBuffer()
    for location in state.objects(covering: stream, from: 0).sorted(by: { $0.startOffset < $1.startOffset }) {
        let object = try await harness.store.get(ObjectKey.make(id: UInt64(bitPattern: location.objectId), kind: .streamSet))
        let index = try ObjectIndex.decode(object: object)
        for entry in index.entries(stream: UInt64(bitPattern: stream)) {
            guard var block = object.getSlice(at: object.readerIndex + entry.byteRange.lowerBound, length: entry.byteRange.count) else {
                throw TestFailure("block out of bounds")
            }
            joined.writeBuffer(&block)
        }
    }
    return joined
}

/// Wraps a store; its PUTs fail while `failing` is set (an object store outage).
final class FlakyStore: ObjectStore {
    let inner: any ObjectStore
    let failing = Mutex(true)
    let failedPuts = Mutex(0)

    init(_ inner: any ObjectStore) { self.inner = inner }

    func put(_ key: String, _ data: ByteBuffer) async throws {
        if failing.withLock({ $0 }) {
            failedPuts.withLock { $0 += 1 }
            throw TestFailure("store unavailable")
        }
        try await inner.put(key, data)
    }
    func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool { try await inner.putIfAbsent(key, data) }
    func get(_ key: String) async throws -> ByteBuffer { try await inner.get(key) }
    func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer { try await inner.get(key, range: range) }
    func head(_ key: String) async throws -> ObjectInfo? { try await inner.head(key) }
    func delete(_ key: String) async throws { try await inner.delete(key) }
    func delete(_ keys: [String]) async throws { try await inner.delete(keys) }
    func list(prefix: String) async throws -> [ObjectInfo] { try await inner.list(prefix: prefix) }
    var stats: ObjectStoreStats { inner.stats }
}

/// Polls the controller (bounded: 10 s) until `stream`'s committed end is `target`; returns the last value seen.
func waitForCommittedEnd(_ stream: Int64, _ target: Int64, harness: Harness) async throws -> Int64 {
    let committed = Mutex<Int64>(-1)
    _ = await waitUntil(timeout: .seconds(10), every: .milliseconds(25)) {
        let end = (try? await harness.stream(stream).committedEnd) ?? -1
        committed.withLock { $0 = end }
        return end == target
    }
    return committed.withLock { $0 }
}

/// Runs `body` (bounded by `limit`) with a WAL engine on the harness's volume and an uploader to `store`
/// (the harness's by default) looping with `interval` and `thresholdBytes`; then stops them and the harness.
func withUploader(
    _ harness: Harness, store: (any ObjectStore)? = nil, interval: Duration, thresholdBytes: Int, limit: Duration,
    _ body: @escaping @Sendable (WALEngine, WALUploader) async throws -> Void
) async throws {
    let engine = try await WALEngine.open(
        configuration: .init(directory: harness.directory + "/wal", segmentSize: 1 << 20, zeroFillSegments: false), logger: testLogger)
    let uploader = WALUploader(
        engine: engine, store: store ?? harness.store, controller: harness.client, metadata: harness.follower, logger: testLogger)
    let loop = Task { await uploader.run(interval: interval, thresholdBytes: thresholdBytes) }
    try await withCleanup {
        try await withTimeout(limit, "uploads") { try await body(engine, uploader) }
    } cleanup: {
        loop.cancel()
        await loop.value
        await engine.close()
        await harness.stop()
    }
}
