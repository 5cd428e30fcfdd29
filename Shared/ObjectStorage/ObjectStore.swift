import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Size and entity tag of a stored object.
public struct ObjectInfo: Hashable, Sendable {
    /// The object's key.
    public var key: String
    /// Its size in bytes.
    public var size: Int
    /// The store's entity tag without quotes (S3: MD5 hex for single-part uploads; file store: size and mtime).
    public var etag: String

    public init(key: String, size: Int, etag: String) {
        self.key = key
        self.size = size
        self.etag = etag
    }
}

/// A failure of an object store operation.
public enum ObjectStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No object has that key.
    case notFound(key: String)
    /// A condition on the request did not hold (S3 412 outside a conditional create).
    case preconditionFailed(key: String)
    /// The requested range starts at or past the end of the object (S3 416).
    case invalidRange(key: String, range: Range<Int>)
    /// The store URL could not be understood.
    case invalidURL(String)
    /// The key cannot be stored (empty, too long, not representable).
    case invalidKey(String)
    /// The server answered with an error status; `code` is the S3 error code when the body had one.
    case http(status: Int, code: String, message: String)
    /// The request did not get an answer (connection refused or reset, DNS, TLS, local I/O).
    case transport(String)
    /// The request ran past its connect or total timeout.
    case timedOut(String)
    /// Stored bytes failed a structural or checksum check.
    case corrupt(String)

    public var description: String {
        switch self {
        case let .notFound(key): "object not found: \(key)"
        case let .preconditionFailed(key): "precondition failed for \(key)"
        case let .invalidRange(key, range): "range \(range.lowerBound)..<\(range.upperBound) is past the end of \(key)"
        case let .invalidURL(reason): "invalid object store URL: \(reason)"
        case let .invalidKey(reason): "invalid object key: \(reason)"
        case let .http(status, code, message): "object store answered HTTP \(status) \(code): \(message)"
        case let .transport(reason): "object store transport error: \(reason)"
        case let .timedOut(reason): "object store request timed out: \(reason)"
        case let .corrupt(reason): "corrupt object: \(reason)"
        }
    }
}

/// Key/value storage of immutable byte objects: the local-directory store or S3.
///
/// Ranged reads follow S3: a range that starts at or past the end of a non-empty object throws
/// `invalidRange`; one that ends past the end returns the bytes that exist (a short read). An empty
/// range returns an empty buffer without touching the store.
public protocol ObjectStore: Sendable {
    /// Stores `data` under `key`, replacing any existing object; readers see the old or the new object, never a mix.
    func put(_ key: String, _ data: ByteBuffer) async throws
    /// Stores `data` only if no object has `key`; returns false if one already existed.
    func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool
    /// Reads a whole object; throws `notFound` if it does not exist.
    func get(_ key: String) async throws -> ByteBuffer
    /// Reads `range` of an object (see the protocol note for the edge cases).
    func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer
    /// Size and etag of an object, or nil if it does not exist.
    func head(_ key: String) async throws -> ObjectInfo?
    /// Deletes an object; deleting a missing object succeeds.
    func delete(_ key: String) async throws
    /// Deletes many objects (S3 batches of 1000); missing ones are ignored.
    func delete(_ keys: [String]) async throws
    /// Every object whose key starts with `prefix`, in key order.
    func list(prefix: String) async throws -> [ObjectInfo]
    /// Counters of the requests this store made.
    var stats: ObjectStoreStats { get }
}

/// Request counters of one store, safe to read from any thread.
public final class ObjectStoreStats: Sendable {
    /// A point-in-time copy of the counters.
    public struct Snapshot: Sendable, Equatable {
        /// Requests sent (every attempt counts, retries included).
        public var requests = 0
        /// Attempts that were retried.
        public var retries = 0
        /// Requests that ended in an error surfaced to the caller.
        public var failures = 0
        /// Body bytes sent.
        public var bytesSent = 0
        /// Body bytes received.
        public var bytesReceived = 0
        /// Ranged reads issued (each attempt counts).
        public var rangedGets = 0
        /// Connections opened (S3 only; low when keep-alive works).
        public var connectionsOpened = 0

        public init() {}
    }

    private let counters = NIOLockedValueBox(Snapshot())

    public init() {}

    /// The current values.
    public var snapshot: Snapshot { counters.withLockedValue { $0 } }

    func update(_ body: (inout Snapshot) -> Void) {
        counters.withLockedValue { body(&$0) }
    }
}

/// Opens the store named by `url`: `file:///abs/path` (a local directory, created if missing) or
/// `s3://BUCKET?endpoint=http://HOST:PORT&region=R` (credentials from AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN).
public func makeObjectStore(url: String, logger: Logger) throws -> any ObjectStore {
    if url.hasPrefix("file://") {
        let path = String(url.dropFirst("file://".count))
        guard path.hasPrefix("/") else { throw ObjectStoreError.invalidURL("file:// needs an absolute path: \(url)") }
        return try FileObjectStore(directory: percentDecode(path) ?? path, logger: logger)
    }
    if url.hasPrefix("s3://") {
        let configuration = try S3Configuration(url: url, environment: currentEnvironment())
        return try S3ObjectStore(configuration: configuration, logger: logger)
    }
    throw ObjectStoreError.invalidURL("unsupported scheme (want file:// or s3://): \(url)")
}

/// `%XX` (upper-case hex) for every byte of `text` that `keep(byte, index)` does not let through as it is.
func percentEncode(_ text: String, keeping keep: (_ byte: UInt8, _ index: Int) -> Bool) -> String {
    let digits = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    for (index, byte) in text.utf8.enumerated() {
        if keep(byte, index) {
            out.append(byte)
        } else {
            out.append(UInt8(ascii: "%"))
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// ASCII letters, digits, `-` and `_`: kept as they are by every percent-encoding here.
func isPlainASCII(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
        || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
        || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
        || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
}

func percentDecode(_ string: some StringProtocol) -> String? {
    var bytes: [UInt8] = []
    let utf8 = Array(string.utf8)
    var index = 0
    while index < utf8.count {
        let byte = utf8[index]
        if byte == UInt8(ascii: "%") {
            guard index + 2 < utf8.count, let high = hexValue(utf8[index + 1]), let low = hexValue(utf8[index + 2]) else {
                return nil
            }
            bytes.append(high << 4 | low)
            index += 3
        } else {
            bytes.append(byte)
            index += 1
        }
    }
    return String(validating: bytes, as: UTF8.self)
}

func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}

func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}

func currentEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let value = getenv(name) { result[name] = String(cString: value) }
    }
    return result
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
