import KafkaTransport
import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 GET client for admin endpoints (`floe dev status`, tests, probes).
public enum AdminClient {
    /// One response: status code and body.
    public struct Response: Sendable {
        /// HTTP status code.
        public var status: Int
        /// Response headers.
        public var headers: [(String, String)]
        /// Response body bytes.
        public var body: [UInt8]
        /// The body as UTF-8 text.
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Why a GET did not produce a response.
    public enum Failure: Error, Equatable {
        case timedOut
        case connectionClosed
        case responseTooLarge
    }

    /// Sends GET for each path over one keep-alive connection, in order, and returns the responses; the whole exchange is bounded by `timeout`.
    public static func get(
        _ address: KafkaEndpoint,
        paths: [String],
        method: HTTPMethod = .GET,
        timeout: Duration = .seconds(2),
        maxBodyBytes: Int = 4 * 1024 * 1024,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> [Response] {
        try await withThrowingTaskGroup(of: [Response]?.self) { tasks in
            tasks.addTask {
                try await exchange(address, paths: paths, method: method, maxBodyBytes: maxBodyBytes, group: group)
            }
            tasks.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { tasks.cancelAll() }
            guard let first = try await tasks.next(), let responses = first else { throw Failure.timedOut }
            return responses
        }
    }

    /// GET one path on a fresh connection.
    public static func get(_ address: KafkaEndpoint, path: String, timeout: Duration = .seconds(2)) async throws -> Response {
        let responses = try await get(address, paths: [path], timeout: timeout)
        guard let response = responses.first else { throw Failure.connectionClosed }
        return response
    }

    private static func exchange(
        _ address: KafkaEndpoint, paths: [String], method: HTTPMethod, maxBodyBytes: Int, group: any EventLoopGroup
    ) async throws -> [Response] {
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(2))
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            var responses: [Response] = []
            for path in paths {
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: address.description)
                headers.add(name: "Connection", value: "keep-alive")
                try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)))
                try await outbound.write(.end(nil))
                var current: Response?
                reading: while true {
                    guard let part = try await iterator.next() else { throw Failure.connectionClosed }
                    switch part {
                    case .head(let head):
                        current = Response(status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) }, body: [])
                    case .body(var chunk):
                        guard (current?.body.count ?? 0) + chunk.readableBytes <= maxBodyBytes else { throw Failure.responseTooLarge }
                        current?.body += chunk.readBytes(length: chunk.readableBytes) ?? []
                    case .end:
                        guard let done = current else { throw Failure.connectionClosed }
                        responses.append(done)
                        break reading
                    }
                }
            }
            return responses
        }
    }
}
