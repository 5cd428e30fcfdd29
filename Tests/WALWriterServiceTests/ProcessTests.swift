import ClusterMetadata
import FloeService
import Foundation
import KafkaProtocol
import KafkaTransport
import NIOCore
import Synchronization
import Testing

/// Finds `floe-wal-writer` in the build directory that holds this test bundle.
func walWriterBinary() -> String? {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("floe-wal-writer").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    let fallback = FileManager.default.currentDirectoryPath + "/.build/debug/floe-wal-writer"
    return FileManager.default.isExecutableFile(atPath: fallback) ? fallback : nil
}

/// One `floe-wal-writer` process, restartable on the same volume.
final class WALWriterProcess: @unchecked Sendable {
    let binary: String
    let listen: Int
    let admin: Int
    let arguments: [String]
    let logPath: String
    private var process: Process?

    init(binary: String, harness: Harness) throws {
        self.binary = binary
        listen = try freePort()
        admin = try freePort()
        logPath = harness.directory + "/wal-writer.log"
        arguments = [
            "--node-id", "201", "--zone", "a", "--listen", "127.0.0.1:\(listen)", "--admin", "127.0.0.1:\(admin)",
            "--controllers", "127.0.0.1:\(harness.controllerEndpoint.port)", "--volume", harness.directory + "/wal",
            "--upload-interval-ms", "50", "--log-level", "warning", "--segment-bytes", "\(1 << 20)",
        ]
    }

    var endpoint: KafkaEndpoint { KafkaEndpoint(host: "127.0.0.1", port: listen) }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        if let handle = FileHandle(forWritingAtPath: logPath) {
            handle.seekToEndOfFile()
            process.standardError = handle
            process.standardOutput = handle
        }
        try process.run()
        self.process = process
    }

    func kill() {
        guard let process else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    func terminate() -> Int32? {
        guard let process else { return nil }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
        return process.terminationStatus
    }

    /// Polls `/readyz` (bounded) until the writer has recovered its WAL and registered.
    func waitReady() async throws {
        for _ in 0..<400 {
            if let response = try? await AdminClient.get(HostPort(host: "127.0.0.1", port: admin), path: "/readyz", timeout: .milliseconds(500)),
               response.status == 200 {
                return
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw TestFailure("floe-wal-writer not ready; log: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
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
        let binary = try #require(walWriterBinary(), "floe-wal-writer not built next to the tests")
        let harness = try await Harness(name: "process")
        let writer = try WALWriterProcess(binary: binary, harness: harness)
        defer { writer.kill() }
        do {
            let (stream, epoch) = try await harness.createStream("processed")
            try writer.start()
            try await writer.waitReady()
            let status = try await AdminClient.get(HostPort(host: "127.0.0.1", port: writer.admin), path: "/status")
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
            try await withTimeout(.seconds(30), "acknowledged appends") {
                for _ in 0..<3000 {
                    if acknowledged.all.count >= 300 { return }
                    try await Task.sleep(for: .milliseconds(10))
                }
                throw TestFailure("too few acknowledged appends")
            }
            let metrics = try await AdminClient.get(HostPort(host: "127.0.0.1", port: writer.admin), path: "/metrics")
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
