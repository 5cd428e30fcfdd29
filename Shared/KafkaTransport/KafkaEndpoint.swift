/// A host and port: what a `KafkaClient` connects to, what a service listens on and advertises, and
/// what `HOST:PORT` means on every command line and in every config file.
public struct KafkaEndpoint: Hashable, Sendable, Codable, CustomStringConvertible {
    /// Host name or address, without IPv6 brackets.
    public var host: String
    /// TCP port; 0 asks the OS for a free port when binding.
    public var port: Int

    /// An endpoint from parts that are already valid.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT` or `[IPv6]:PORT`, with errors that name what is wrong.
    public init(parsing text: String) throws(EndpointError) {
        let trimmed = Self.trimmingSpaces(text[...])
        guard !trimmed.isEmpty else { throw .empty }
        let hostPart: Substring
        let portPart: Substring
        if trimmed.hasPrefix("[") {
            guard let close = trimmed.firstIndex(of: "]") else { throw .unclosedBracket(text) }
            hostPart = trimmed[trimmed.index(after: trimmed.startIndex)..<close]
            let rest = trimmed[trimmed.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .missingPort(text) }
            portPart = rest.dropFirst()
        } else {
            guard let colon = trimmed.lastIndex(of: ":") else { throw .missingPort(text) }
            hostPart = trimmed[..<colon]
            portPart = trimmed[trimmed.index(after: colon)...]
            // A bare IPv6 address has several colons and cannot be told apart from its port.
            if hostPart.contains(":") { throw .unbracketedIPv6(text) }
        }
        guard !hostPart.isEmpty else { throw .missingHost(text) }
        guard !hostPart.contains(where: { $0 == " " || $0 == "/" || $0 == "," }) else { throw .invalidHost(text) }
        guard !portPart.isEmpty else { throw .missingPort(text) }
        guard portPart.allSatisfy({ $0.isASCII && $0.isNumber }), portPart.count <= 5,
            let port = Int(portPart), port <= 65_535
        else { throw .invalidPort(text) }
        self.host = String(hostPart)
        self.port = port
    }

    /// Parses a comma-separated list of endpoints; empty entries are errors, not skipped.
    public static func parseList(_ text: String) throws(EndpointError) -> [KafkaEndpoint] {
        var result: [KafkaEndpoint] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !trimmingSpaces(item).isEmpty else { throw .emptyListEntry(text) }
            result.append(try KafkaEndpoint(parsing: String(item)))
        }
        return result
    }

    private static func trimmingSpaces(_ text: Substring) -> Substring {
        var view = text
        while let first = view.first, first == " " || first == "\t" { view = view.dropFirst() }
        while let last = view.last, last == " " || last == "\t" { view = view.dropLast() }
        return view
    }

    /// `host:port`, bracketing IPv6 addresses so the text parses back.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = try KafkaEndpoint(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Why a `HOST:PORT` string was rejected.
public enum EndpointError: Error, Equatable, CustomStringConvertible {
    case empty
    case missingHost(String)
    case missingPort(String)
    case invalidPort(String)
    case invalidHost(String)
    case unclosedBracket(String)
    case unbracketedIPv6(String)
    case emptyListEntry(String)

    public var description: String {
        switch self {
        case .empty: "empty address, expected HOST:PORT"
        case .missingHost(let s): "'\(s)' has no host, expected HOST:PORT"
        case .missingPort(let s): "'\(s)' has no port, expected HOST:PORT"
        case .invalidPort(let s): "'\(s)' has an invalid port, expected a number from 0 to 65535"
        case .invalidHost(let s): "'\(s)' has an invalid host"
        case .unclosedBracket(let s): "'\(s)' opens '[' without a closing ']'"
        case .unbracketedIPv6(let s): "'\(s)' looks like an IPv6 address; write it as [ADDRESS]:PORT"
        case .emptyListEntry(let s): "'\(s)' has an empty entry, expected HOST:PORT,HOST:PORT,…"
        }
    }
}
