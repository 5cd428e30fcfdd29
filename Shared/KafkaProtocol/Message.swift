import NIOCore

/// A schema struct (message body or nested struct) that can be decoded and encoded at any valid version.
public protocol KafkaStruct: Hashable, Sendable {
    /// Every field at its schema default.
    init()
    /// Decodes the struct as written at `version`.
    init(from buffer: inout ByteBuffer, version: Int16) throws(ProtocolError)
    /// Encodes the struct at `version`.
    func encode(to buffer: inout ByteBuffer, version: Int16) throws(ProtocolError)
}

/// A top-level schema: request, response, header or standalone data.
public protocol KafkaMessage: KafkaStruct {
    /// Versions the schema defines.
    static var validVersions: ClosedRange<Int16> { get }
    /// First version using the flexible (compact, tagged) encoding; nil if none does.
    static var firstFlexibleVersion: Int16? { get }
}

/// A request body, tied to its api key and response type.
public protocol KafkaRequest: KafkaMessage {
    associatedtype Response: KafkaResponse
    /// The api key sent in the request header.
    static var apiKey: ApiKey { get }
}

/// A response body.
public protocol KafkaResponse: KafkaMessage {
    /// The api key of the request this answers.
    static var apiKey: ApiKey { get }
}
