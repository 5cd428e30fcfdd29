import Logging
import NIOCore

/// Sends Kafka-framed requests to any number of servers, sharing one pipelined connection per endpoint
/// and reconnecting on the next request after a connection died or was closed by a timeout.
public actor KafkaClient {
    /// Applies to every connection the client opens.
    public let configuration: KafkaClientConfiguration
    private let logger: Logger
    private var connections: [KafkaEndpoint: Task<KafkaConnection, any Error>] = [:]

    /// A client with no connections yet; they open on first use.
    public init(configuration: KafkaClientConfiguration = .init(), logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Sends a request and returns the response body; see `KafkaConnection.send`.
    public func send(
        to endpoint: KafkaEndpoint, apiKey: Int16, apiVersion: Int16, headerVersion: Int16,
        responseHeaderVersion: Int16, clientId: String?, body: ByteBuffer, timeout: Duration
    ) async throws -> ByteBuffer {
        let connection = try await connection(to: endpoint)
        return try await connection.send(
            apiKey: apiKey, apiVersion: apiVersion, headerVersion: headerVersion,
            responseHeaderVersion: responseHeaderVersion, clientId: clientId, body: body, timeout: timeout
        )
    }

    /// Sends a request that gets no response; see `KafkaConnection.sendOneway`.
    public func sendOneway(
        to endpoint: KafkaEndpoint, apiKey: Int16, apiVersion: Int16, headerVersion: Int16,
        clientId: String?, body: ByteBuffer
    ) async throws {
        let connection = try await connection(to: endpoint)
        try await connection.sendOneway(
            apiKey: apiKey, apiVersion: apiVersion, headerVersion: headerVersion, clientId: clientId, body: body
        )
    }

    /// The live shared connection to `endpoint`, opening a new one if there is none or it died.
    public func connection(to endpoint: KafkaEndpoint) async throws -> KafkaConnection {
        if let existing = connections[endpoint] {
            if let connection = try? await existing.value, connection.isActive {
                return connection
            }
            // Another caller may have replaced it while this one waited.
            if let current = connections[endpoint], current != existing {
                if let connection = try? await current.value, connection.isActive { return connection }
            }
        }
        let configuration = configuration
        let connecting = Task { () throws -> KafkaConnection in
            try await KafkaConnection.connect(host: endpoint.host, port: endpoint.port, configuration: configuration)
        }
        connections[endpoint] = connecting
        do {
            let connection = try await connecting.value
            logger.debug("connected", metadata: ["endpoint": "\(endpoint)"])
            return connection
        } catch {
            if connections[endpoint] == connecting { connections[endpoint] = nil }
            throw error
        }
    }

    /// Closes every connection; later requests open new ones.
    public func closeAll() async {
        let all = connections.values
        connections.removeAll()
        for task in all {
            if let connection = try? await task.value { await connection.close() }
        }
    }
}
