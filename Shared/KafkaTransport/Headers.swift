import KafkaProtocol
import NIOCore

/// The Kafka API key of ApiVersions, which is delivered even at versions the server does not support.
let apiVersionsKey: Int16 = 18

/// One request as read off the wire: the parsed request header plus the body as a zero-copy slice of the frame.
public struct KafkaRequestFrame: Sendable {
    /// The Kafka API key (0 = Produce, 18 = ApiVersions, 10000+ = project-internal APIs).
    public var apiKey: Int16
    /// The request's version of that API.
    public var apiVersion: Int16
    /// Echoed in the response so the client can match it.
    public var correlationId: Int32
    /// The client-supplied id (nullable classic string in every header version).
    public var clientId: String?
    /// 0, 1 or 2; 1 for an ApiVersions request whose version the server does not support.
    public var headerVersion: Int16
    /// Tagged fields of a v2 header, none of which this transport interprets.
    public var headerTaggedFields: [UnknownTaggedField]
    /// Everything after the header (for an unsupported ApiVersions version, possibly including its header tagged fields).
    public var body: ByteBuffer
    /// The whole frame as received (header and body, without the size field), sharing storage with `body`;
    /// kept for tools that record or forward requests byte for byte.
    public var frame: ByteBuffer

    /// Builds a frame by hand (tests, in-process callers). Without `frame`, only the body is known.
    public init(
        apiKey: Int16, apiVersion: Int16, correlationId: Int32, clientId: String?, headerVersion: Int16,
        headerTaggedFields: [UnknownTaggedField] = [], body: ByteBuffer, frame: ByteBuffer? = nil
    ) {
        self.frame = frame ?? body
        self.apiKey = apiKey
        self.apiVersion = apiVersion
        self.correlationId = correlationId
        self.clientId = clientId
        self.headerVersion = headerVersion
        self.headerTaggedFields = headerTaggedFields
        self.body = body
    }
}

/// Decides the request header version (0, 1 or 2) of an (api key, api version) pair; nil means unsupported.
public typealias KafkaHeaderVersionResolver = @Sendable (_ apiKey: Int16, _ apiVersion: Int16) -> Int16?

extension AdvertisedVersions {
    /// The resolver of a server that serves exactly this table (see `requestHeaderVersion(apiKey:version:)`).
    public var headerVersionResolver: KafkaHeaderVersionResolver {
        { [self] apiKey, version in requestHeaderVersion(apiKey: apiKey, version: version) }
    }
}

/// Encoding and decoding of Kafka request and response headers.
public enum KafkaHeaders {
    /// Parses the request header at the front of `frame` (the bytes after the size field).
    ///
    /// An unsupported pair throws `unsupportedVersion`, except ApiVersions, which is parsed as header v1
    /// so the handler can answer with a v0 body.
    public static func parseRequest(
        frame: ByteBuffer, resolver: KafkaHeaderVersionResolver
    ) throws(KafkaTransportError) -> KafkaRequestFrame {
        var buffer = frame
        do {
            let apiKey: Int16 = try buffer.readKafkaInteger()
            let apiVersion: Int16 = try buffer.readKafkaInteger()
            let headerVersion: Int16
            switch resolver(apiKey, apiVersion) {
            case let version? where (0...2).contains(version):
                headerVersion = version
            case nil where apiKey == apiVersionsKey:
                headerVersion = 1
            case let version?:
                throw KafkaTransportError.invalidArgument("resolver returned header version \(version)")
            case nil:
                throw KafkaTransportError.unsupportedVersion(apiKey: apiKey, apiVersion: apiVersion)
            }
            let correlationId: Int32 = try buffer.readKafkaInteger()
            var clientId: String? = nil
            var tagged: [UnknownTaggedField] = []
            if headerVersion >= 1 {
                clientId = try buffer.readKafkaString(compact: false)
            }
            if headerVersion >= 2 {
                tagged = try buffer.readTaggedFields { _, _ in false }
            }
            return KafkaRequestFrame(
                apiKey: apiKey, apiVersion: apiVersion, correlationId: correlationId, clientId: clientId,
                headerVersion: headerVersion, headerTaggedFields: tagged, body: buffer, frame: frame
            )
        } catch let error as KafkaTransportError {
            throw error
        } catch {
            throw .malformedRequest(String(describing: error))
        }
    }

    /// Writes a complete request frame (size, header, body) for the client side.
    public static func writeRequest(
        into buffer: inout ByteBuffer, apiKey: Int16, apiVersion: Int16, correlationId: Int32,
        clientId: String?, headerVersion: Int16, body: ByteBuffer
    ) {
        let sizeIndex = buffer.writerIndex
        buffer.writeKafkaInteger(Int32(0))
        buffer.writeKafkaInteger(apiKey)
        buffer.writeKafkaInteger(apiVersion)
        buffer.writeKafkaInteger(correlationId)
        if headerVersion >= 1 { buffer.writeKafkaString(clientId, compact: false) }
        if headerVersion >= 2 { buffer.writeUnsignedVarint(0) }
        var body = body
        buffer.writeBuffer(&body)
        buffer.setInteger(Int32(truncatingIfNeeded: buffer.writerIndex - sizeIndex - 4), at: sizeIndex, endianness: .big)
    }

    /// Builds the size field and response header that precede a response body (written separately, without copying).
    public static func responsePrefix(correlationId: Int32, headerVersion: Int16, bodySize: Int) -> ByteBuffer {
        var prefix = ByteBuffer()
        prefix.reserveCapacity(9)
        let headerSize = headerVersion >= 1 ? 5 : 4
        prefix.writeKafkaInteger(Int32(truncatingIfNeeded: headerSize + bodySize))
        prefix.writeKafkaInteger(correlationId)
        if headerVersion >= 1 { prefix.writeUnsignedVarint(0) }
        return prefix
    }

    /// Strips the response header from `frame`, returning its correlation id and the body.
    public static func parseResponse(
        frame: ByteBuffer, headerVersion: Int16
    ) throws(KafkaTransportError) -> (correlationId: Int32, body: ByteBuffer) {
        var buffer = frame
        do {
            let correlationId: Int32 = try buffer.readKafkaInteger()
            if headerVersion >= 1 {
                _ = try buffer.readTaggedFields { _, _ in false }
            }
            return (correlationId, buffer)
        } catch {
            throw .malformedResponse(String(describing: error))
        }
    }
}
