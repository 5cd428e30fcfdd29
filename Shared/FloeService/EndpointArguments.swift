import ArgumentParser
import KafkaTransport

extension KafkaEndpoint: ExpressibleByArgument {
    public init?(argument: String) {
        guard let parsed = try? KafkaEndpoint(parsing: argument) else { return nil }
        self = parsed
    }
}

/// A comma-separated `HOST:PORT,…` list as one option value (`--controllers`).
public struct EndpointList: Hashable, Sendable, ExpressibleByArgument, CustomStringConvertible {
    /// The endpoints in the order given.
    public var endpoints: [KafkaEndpoint]

    /// Wraps endpoints that are already parsed.
    public init(_ endpoints: [KafkaEndpoint]) {
        self.endpoints = endpoints
    }

    public init?(argument: String) {
        guard let parsed = try? KafkaEndpoint.parseList(argument) else { return nil }
        self.endpoints = parsed
    }

    public var description: String {
        endpoints.map(\.description).joined(separator: ",")
    }
}

extension KafkaEndpoint {
    /// An ArgumentParser `transform:` that reports the exact parse problem instead of a generic "invalid value".
    public static func argument(_ text: String) throws -> KafkaEndpoint {
        do {
            return try KafkaEndpoint(parsing: text)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// The list form of ``argument(_:)``.
    public static func listArgument(_ text: String) throws -> EndpointList {
        do {
            return EndpointList(try KafkaEndpoint.parseList(text))
        } catch {
            throw ValidationError(error.description)
        }
    }
}
