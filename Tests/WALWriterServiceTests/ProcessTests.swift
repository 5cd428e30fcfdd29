import ClusterMetadata
import FloeService
import Foundation
import KafkaProtocol
import KafkaTransport
import NIOCore
import Synchronization
import TestKit
import Testing

/// One `floe-wal-writer` process, restartable on the same volume.
final class WALWriterProcess: Sendable {
    let binary: String
    let listen: Int
    let admin: Int
    let arguments: [String]
    let logPath: String
    private let process = ProcessSlot()

    init(binary: String, harness: Harness) throws {
        self.binary = binary
        let ports = try freePorts(2)
        listen = ports[0]
        admin = ports[1]
        logPath = harness.directory + "/wal-writer.log"
        arguments = [
            "--node-id", "201", "--zone", "a", "--listen", "127.0.0.1:\(listen)", "--admin", "127.0.0.1:\(admin)",
            "--controllers", "127.0.0.1:\(harness.controllerEndpoint.port)", "--volume", harness.directory + "/wal",
            "--upload-interval-ms", "50", "--log-level", "warning", "--segment-bytes", "\(1 << 20)",
        ]
    }

    var endpoint: KafkaEndpoint { KafkaEndpoint(host: "127.0.0.1", port: listen) }

    func start() throws {
        try process.start(binary, arguments, logPath: logPath)
    }

    func kill() { process.stop(SIGKILL) }

    func terminate() -> Int32? { process.stop(SIGTERM) }

    /// Polls `/readyz` (the writer is another process: there is no event) until it has recovered its WAL and registered.
    func waitReady() async throws {
        let admin = KafkaEndpoint(host: "127.0.0.1", port: admin)
        let ready = await waitUntil(timeout: .seconds(20), every: .milliseconds(25)) {
            (try? await AdminClient.get(admin, path: "/readyz", timeout: .milliseconds(500)))?.status == 200
        }
        guard ready else { throw TestFailure("floe-wal-writer not ready; log: \(fileTail(logPath, lines: 200))") }
    }
}

/// Offsets whose appends were acknowledged.
final class Acknowledged: Sendable {
    private let offsets = Mutex<[Int64]>([])
    func add(_ offset: Int64) { offsets.withLock { $0.append(offset) } }
    var all: [Int64] { offsets.withLock { $0 } }
}

@Suite("floe-wal-writer process", .serialized)
struct WALWriterProcessTests {
    func send<Request: KafkaMessage, Response: KafkaMessage>(
        _ request: Request, _ key: ApiKey, to endpoint: KafkaEndpoint, transport: KafkaClient, as: Response.Type
    ) async throws -> Response {
        var body = ByteBuffer()
        try request.encode(to: &body, version: 0)
        var reply = try await transport.send(
            to: endpoint, apiKey: key.rawValue, apiVersion: 0, headerVersion: key.requestHeaderVersion(0),
            responseHeaderVersion: key.responseHeaderVersion(0), clientId: "test", body: body, timeout: .seconds(10))
        return try Response(from: &reply, version: 0)
    }

    @Test("SIGKILL under appends, then restart: every acknowledged append ends up committed", .timeLimit(.minutes(2)))
    func killUnderAppendsLosesNothingAcknowledged() async throws {
        let binary = try #require(builtProduct("floe-wal-writer"), "floe-wal-writer not built next to the tests")
        let harness = try await Harness(name: "process")
        let writer = try WALWriterProcess(binary: binary, harness: harness)
        defer { writer.kill() }
        do {
            let (stream, epoch) = try await harness.createStream("processed")
            try writer.start()
            try await writer.waitReady()
            let status = try await AdminClient.get(KafkaEndpoint(host: "127.0.0.1", port: writer.admin), path: "/status")
            #expect(status.text.contains("\"kind\":\"wal-writer\""), "\(status.text)")
            #expect(status.text.contains("durable_not_uploaded_bytes"), "\(status.text)")
            let registered = await harness.follower.state.nodes[201]
            #expect(registered?.kind == .walWriter)

            let acknowledged = Acknowledged()
            let endpoint = writer.endpoint
            let appender = Task {
                let transport = KafkaClient(logger: testLogger)
                defer { Task { await transport.closeAll() } }
                for offset in Int64(0)..<100_000 {
                    var request = WALAppendRequest()
                    request.streamId = stream
                    request.epoch = epoch
                    request.baseOffset = offset
                    request.lastOffset = offset
                    request.batches = recordBatch(baseOffset: offset, count: 1, timestamp: offset)
                    guard let response = try? await send(request, .wALAppend, to: endpoint, transport: transport, as: WALAppendResponse.self),
                          response.errorCode == 0
                    else { return }
                    acknowledged.add(offset)
                }
            }
            try await waitUntil("300 acknowledged appends", timeout: .seconds(30)) { acknowledged.all.count >= 300 }
            let metrics = try await AdminClient.get(KafkaEndpoint(host: "127.0.0.1", port: writer.admin), path: "/metrics")
            #expect(metrics.text.contains("floe_wal_append_bytes_total"), "\(metrics.text)")
            #expect(metrics.text.contains("floe_wal_append_seconds"), "\(metrics.text)")
            writer.kill()
            await appender.value
            let acked = acknowledged.all
            #expect(acked == Array(0..<Int64(acked.count)))

            try writer.start()
            try await writer.waitReady()
            let transport = KafkaClient(logger: testLogger)
            let flushed = try await send(WALFlushRequest(), .wALFlush, to: writer.endpoint, transport: transport, as: WALFlushResponse.self)
            await transport.closeAll()
            #expect(flushed.errorCode == 0, "\(flushed.errorMessage ?? "")")

            let committedEnd = try await harness.stream(stream).committedEnd
            #expect(committedEnd >= Int64(acked.count))
            var expected = ByteBuffer()
            for offset in Int64(0)..<committedEnd {
                var batch = recordBatch(baseOffset: offset, count: 1, timestamp: offset)
                expected.writeBuffer(&batch)
            }
            #expect(try await committedBytes(of: stream, harness: harness) == expected)
            #expect(writer.terminate() == 0)
            // SIGTERM deregisters: the node is gone from the metadata.
            _ = try await harness.stream(stream)
            #expect(await harness.follower.state.nodes[201] == nil)
        } catch {
            writer.kill()
            await harness.stop()
            throw error
        }
        await harness.stop()
    }
}
