import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TestKit
import Testing

@testable import KafkaTransport

/// Collects log lines so tests can assert what was logged.
final class LogCapture: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let storage = Mutex<[Line]>([])

    var lines: [Line] { storage.withLock { $0 } }

    func lines(atLeast level: Logger.Level) -> [Line] { lines.filter { $0.level >= level } }

    func append(_ line: Line) { storage.withLock { $0.append(line) } }

    func logger(_ label: String = "test") -> Logger {
        var logger = Logger(label: label) { _ in CapturingLogHandler(capture: self) }
        logger.logLevel = .trace
        return logger
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        capture.append(.init(
            level: event.level, message: "\(event.message)",
            metadata: merged.mapValues { "\($0)" }
        ))
    }
}

/// Test API keys: 18 = ApiVersions (v0-3, flexible from 3), 1 = echo (v0-20, flexible from 12);
/// everything else is unsupported.
let testResolver: KafkaHeaderVersionResolver = { apiKey, apiVersion in
    switch (apiKey, apiVersion) {
    case (18, 0...2): 1
    case (18, 3): 2
    case (1, 0..<12): 1
    case (1, 12...20): 2
    default: nil
    }
}

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

func buffer(_ string: String) -> ByteBuffer { ByteBuffer(string: string) }

/// Starts a server in a child task, runs `body` with its port, then cancels the server and waits for it.
func withServer<H: KafkaRequestHandler>(
    handler: H, logger: Logger, configure: (inout KafkaServerConfiguration) -> Void = { _ in },
    _ body: @Sendable (KafkaServer<H>, Int) async throws -> Void
) async throws {
    var configuration = KafkaServerConfiguration(port: 0, headerVersionResolver: testResolver)
    configure(&configuration)
    let server = KafkaServer(configuration: configuration, handler: handler, logger: logger)
    let running = Task { try await server.run() }
    do {
        let port = try await withTimeout(.seconds(10), "bind") { try await server.boundPort() }
        try await body(server, port)
    } catch {
        running.cancel()
        throw error
    }
    running.cancel()
    try await withTimeout(.seconds(15), "server shutdown") { try await running.value }
}

/// A raw TCP peer for sending arbitrary bytes and collecting whatever comes back until the server closes.
func rawExchange(port: Int, chunks: [ByteBuffer], timeout: Duration = .seconds(10)) async throws -> ByteBuffer {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await withTimeout(timeout, "raw exchange") {
        try await channel.executeThenClose { inbound, outbound in
            for chunk in chunks { try await outbound.write(chunk) }
            var received = ByteBuffer()
            do {
                for try await var part in inbound { received.writeBuffer(&part) }
            } catch {
                // A reset from the server also ends the exchange.
            }
            return received
        }
    }
}

/// Encodes one request frame the way a client would.
func requestFrame(
    apiKey: Int16, apiVersion: Int16, correlationId: Int32, clientId: String?, headerVersion: Int16,
    taggedFields: [(UInt32, [UInt8])] = [], body: ByteBuffer = ByteBuffer()
) -> ByteBuffer {
    var frame = ByteBuffer()
    frame.writeKafkaInteger(Int32(0))
    frame.writeKafkaInteger(apiKey)
    frame.writeKafkaInteger(apiVersion)
    frame.writeKafkaInteger(correlationId)
    if headerVersion >= 1 { frame.writeKafkaString(clientId, compact: false) }
    if headerVersion >= 2 {
        frame.writeUnsignedVarint(UInt32(taggedFields.count))
        for (tag, data) in taggedFields {
            frame.writeUnsignedVarint(tag)
            frame.writeUnsignedVarint(UInt32(data.count))
            frame.writeBytes(data)
        }
    }
    var body = body
    frame.writeBuffer(&body)
    frame.setInteger(Int32(frame.readableBytes - 4), at: 0, endianness: .big)
    return frame
}

extension AsyncStream {
    /// The next `count` elements, fewer if the stream ends or the task is cancelled (one consumer at a time).
    func next(_ count: Int) async -> [Element] {
        var elements: [Element] = []
        for await element in self {
            elements.append(element)
            if elements.count == count { break }
        }
        return elements
    }
}
