import KafkaProtocol
import NIOCore

/// A response that arrived whole but does not decode as the type its request pairs with.
public struct KafkaResponseDecodingError: Error, Sendable, CustomStringConvertible {
    /// The generated response type that was expected.
    public var responseType: String
    /// What the decoder reported.
    public var underlying: ProtocolError

    public var description: String { "\(responseType): \(underlying)" }
}

// Typed calls: the request's generated type names its api key and its response type, and the api key and
// version decide both header versions, so a caller states only the request, the version and its limits.

extension KafkaConnection {
    /// Sends `request` at `version` and decodes the answer as `R.Response`.
    ///
    /// Throws the request's encoding error, whatever `send(apiKey:…)` throws (`timedOut`, `connectionClosed`,
    /// cancellation), and `KafkaResponseDecodingError` for an answer that does not decode.
    public func send<R: KafkaRequest>(_ request: R, version: Int16, clientId: String?, timeout: Duration) async throws -> R.Response {
        try await send(R.self, body: try request.encodedBody(version: version), version: version, clientId: clientId, timeout: timeout)
    }

    /// Like `send`, but queued for writing before returning (see `enqueue(apiKey:…)`): encoding errors are
    /// thrown here, everything else fails the future. `bodyCapacity` sizes the encoding buffer up front.
    public func enqueue<R: KafkaRequest>(
        _ request: R, version: Int16, clientId: String?, timeout: Duration, bodyCapacity: Int = 0
    ) throws -> EventLoopFuture<R.Response> {
        let key = R.apiKey
        return enqueue(
            apiKey: key.rawValue, apiVersion: version, headerVersion: key.requestHeaderVersion(version),
            responseHeaderVersion: key.responseHeaderVersion(version), clientId: clientId,
            body: try request.encodedBody(version: version, capacity: bodyCapacity), timeout: timeout
        ).flatMapThrowing { reply in try R.decodeResponse(reply, version: version) }
    }

    /// Sends `request` at `version` without waiting for (or expecting) an answer.
    public func sendOneway<R: KafkaRequest>(_ request: R, version: Int16, clientId: String?) async throws {
        try await sendOneway(R.self, body: try request.encodedBody(version: version), version: version, clientId: clientId)
    }

    func send<R: KafkaRequest>(
        _: R.Type, body: ByteBuffer, version: Int16, clientId: String?, timeout: Duration
    ) async throws -> R.Response {
        let key = R.apiKey
        let reply = try await send(
            apiKey: key.rawValue, apiVersion: version, headerVersion: key.requestHeaderVersion(version),
            responseHeaderVersion: key.responseHeaderVersion(version), clientId: clientId, body: body, timeout: timeout)
        return try R.decodeResponse(reply, version: version)
    }

    func sendOneway<R: KafkaRequest>(_: R.Type, body: ByteBuffer, version: Int16, clientId: String?) async throws {
        try await sendOneway(
            apiKey: R.apiKey.rawValue, apiVersion: version, headerVersion: R.apiKey.requestHeaderVersion(version),
            clientId: clientId, body: body)
    }
}

extension KafkaClient {
    /// Sends `request` at `version` to `endpoint` over the shared connection; see `KafkaConnection.send(_:version:…)`.
    public func send<R: KafkaRequest>(
        _ request: R, version: Int16, to endpoint: KafkaEndpoint, clientId: String?, timeout: Duration
    ) async throws -> R.Response {
        // Encoded before connecting: a request that cannot be encoded never opens a connection.
        let body = try request.encodedBody(version: version)
        return try await connection(to: endpoint).send(R.self, body: body, version: version, clientId: clientId, timeout: timeout)
    }

    /// Sends `request` at `version` to `endpoint` without expecting an answer.
    public func sendOneway<R: KafkaRequest>(_ request: R, version: Int16, to endpoint: KafkaEndpoint, clientId: String?) async throws {
        let body = try request.encodedBody(version: version)
        try await connection(to: endpoint).sendOneway(R.self, body: body, version: version, clientId: clientId)
    }
}

extension KafkaRequest {
    func encodedBody(version: Int16, capacity: Int = 0) throws(ProtocolError) -> ByteBuffer {
        var body = ByteBuffer()
        if capacity > 0 { body.reserveCapacity(capacity) }
        try encode(to: &body, version: version)
        return body
    }

    static func decodeResponse(_ reply: ByteBuffer, version: Int16) throws(KafkaResponseDecodingError) -> Response {
        var reply = reply
        do {
            return try Response(from: &reply, version: version)
        } catch {
            throw KafkaResponseDecodingError(responseType: "\(Response.self)", underlying: error)
        }
    }
}

// The server's half: a request frame decodes as the generated request type its api key names, and a
// response is written behind the response header its api and version call for.

extension KafkaRequestFrame {
    /// The body decoded as `R` at the frame's version.
    public func decode<R: KafkaRequest>(_: R.Type) throws(ProtocolError) -> R {
        var body = body
        return try R(from: &body, version: apiVersion)
    }
}

extension KafkaResponse {
    /// This response as a server answers with it: encoded at `version` behind its api's response header. A
    /// response the version cannot carry closes the connection rather than sending bytes the client would misread.
    public func responseAction(version: Int16) -> KafkaResponseAction {
        var body = ByteBuffer()
        do {
            try encode(to: &body, version: version)
        } catch {
            return .close(reason: "cannot encode \(Self.apiKey.name) v\(version) response: \(error)")
        }
        return .respond(body: body, headerVersion: Self.apiKey.responseHeaderVersion(version))
    }
}
