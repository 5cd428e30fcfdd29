import CCurl
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One HTTP request to the S3 endpoint. `path` and query values are raw; encoding happens here so
/// the canonical form curl signs matches what is sent.
struct HTTPRequest: Sendable {
    var method: String
    var path: String
    var query: [(String, String)] = []
    var headers: [(String, String)] = []
    var body: ByteBuffer?
    /// Upper bound on the response body this request may accept.
    var maxResponseBytes = 1 << 30
}

struct HTTPResponse: Sendable {
    var status: Int
    /// Lower-cased header names.
    var headers: [String: String]
    var body: ByteBuffer
    /// New connections this request had to open (0 when a kept-alive one was reused).
    var connectionsOpened = 0

    var bodyText: Substring { Substring(String(buffer: body)) }
}

/// A libcurl easy handle reused by one worker thread, so its connections stay open between requests.
/// Only ever used by the thread that created it (thread-specific storage), hence unchecked.
final class CurlHandle: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    init?() {
        guard let handle = curl_easy_init() else { return nil }
        self.handle = handle
    }

    deinit { curl_easy_cleanup(handle) }
}

/// Buffers shared with curl's C callbacks for one transfer.
private final class TransferContext {
    var upload: ByteBuffer
    var body = ByteBuffer()
    var headers: [String: String] = [:]
    let limit: Int
    var overLimit = false

    init(upload: ByteBuffer, limit: Int) {
        self.upload = upload
        self.limit = limit
    }
}

private let writeCallback: floe_curl_data_callback = { data, size, count, context in
    guard let data, let context else { return 0 }
    let transfer = Unmanaged<TransferContext>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    guard transfer.body.readableBytes + length <= transfer.limit else {
        transfer.overLimit = true
        return 0
    }
    transfer.body.writeBytes(UnsafeRawBufferPointer(start: data, count: length))
    return length
}

private let readCallback: floe_curl_data_callback = { data, size, count, context in
    guard let data, let context else { return 0 }
    let transfer = Unmanaged<TransferContext>.fromOpaque(context).takeUnretainedValue()
    let length = min(size * count, transfer.upload.readableBytes)
    guard length > 0 else { return 0 }
    transfer.upload.withUnsafeReadableBytes { bytes in
        UnsafeMutableRawPointer(data).copyMemory(from: bytes.baseAddress!, byteCount: length)
    }
    transfer.upload.moveReaderIndex(forwardBy: length)
    return length
}

private let headerCallback: floe_curl_data_callback = { data, size, count, context in
    guard let data, let context else { return 0 }
    let transfer = Unmanaged<TransferContext>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    if line.hasPrefix("HTTP/") {
        // A new status line (after 100 Continue or a redirect) starts a new header block.
        transfer.headers = [:]
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t\r\n")
        transfer.headers[name] = value
        // Size the body buffer once instead of growing it chunk by chunk; never past the cap.
        if name == "content-length", let length = Int(value), length > 0 {
            transfer.body.reserveCapacity(min(length, transfer.limit))
        }
    }
    return length
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        let scalars = Array(self.unicodeScalars)
        var start = 0
        var end = scalars.count
        while start < end && set.unicodeScalars.contains(scalars[start]) { start += 1 }
        while end > start && set.unicodeScalars.contains(scalars[end - 1]) { end -= 1 }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[start..<end])
        return String(out)
    }
}

private let curlGlobalInit: Void = { _ = floe_curl_global_init() }()

/// Runs signed HTTP requests with libcurl on a small pool of dedicated threads.
final class CurlTransport: Sendable {
    private let pool: NIOThreadPool
    private let handles = ThreadSpecificVariable<CurlHandle>()
    private let configuration: S3Configuration
    private let signing: String
    private let userName: String
    private let password: String

    init(configuration: S3Configuration) {
        _ = curlGlobalInit
        self.configuration = configuration
        self.signing = "aws:amz:\(configuration.region):s3"
        self.userName = configuration.accessKeyID
        self.password = configuration.secretAccessKey
        self.pool = NIOThreadPool(numberOfThreads: configuration.workerThreads)
        pool.start()
    }

    func shutdown() async throws {
        try await pool.shutdownGracefully()
    }

    deinit {
        pool.shutdownGracefully { _ in }
    }

    /// One attempt, no retries.
    func perform(_ request: HTTPRequest) async throws -> HTTPResponse {
        try await pool.runIfActive { [self] in
            let curl: CurlHandle
            if let existing = handles.currentValue {
                curl = existing
            } else {
                guard let created = CurlHandle() else { throw ObjectStoreError.transport("curl_easy_init failed") }
                handles.currentValue = created
                curl = created
            }
            return try performBlocking(request, on: curl.handle)
        }
    }

    private func performBlocking(_ request: HTTPRequest, on handle: UnsafeMutableRawPointer) throws -> HTTPResponse {
        // reset keeps the connection cache, so keep-alive connections survive between requests.
        curl_easy_reset(handle)
        let url = configuration.endpoint + Self.encodePath(request.path) + Self.encodeQuery(request.query)
        let body = request.body ?? ByteBuffer()
        let transfer = TransferContext(upload: body, limit: request.maxResponseBytes)
        let context = Unmanaged.passUnretained(transfer).toOpaque()

        var headers: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headers) }
        var all = request.headers
        all.append(("x-amz-content-sha256", Digest.sha256Hex(body)))
        if let token = configuration.sessionToken { all.append(("x-amz-security-token", token)) }
        if request.method == "PUT" || request.method == "POST" { all.append(("Content-Type", "application/octet-stream")) }
        // No "Expect:" suppression header: libcurl 7.88 signs it even though it is never sent, which
        // breaks the signature. Large uploads therefore use 100-continue, which S3 servers answer at once.
        for (name, value) in all {
            headers = curl_slist_append(headers, "\(name): \(value)")
        }

        var setupError = CURLE_OK
        func set(_ result: CURLcode) {
            if result != CURLE_OK && setupError == CURLE_OK { setupError = result }
        }
        set(floe_curl_setopt_string(handle, CURLOPT_URL, url))
        set(floe_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        // Keys are opaque: "a/../b" must not be squashed into "b".
        set(floe_curl_setopt_long(handle, CURLOPT_PATH_AS_IS, 1))
        set(floe_curl_setopt_string(handle, CURLOPT_AWS_SIGV4, signing))
        set(floe_curl_setopt_string(handle, CURLOPT_USERNAME, userName))
        set(floe_curl_setopt_string(handle, CURLOPT_PASSWORD, password))
        set(floe_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(configuration.connectTimeout)))
        set(floe_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, Self.milliseconds(configuration.requestTimeout)))
        set(floe_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headers))
        set(floe_curl_setopt_callback(handle, CURLOPT_WRITEFUNCTION, writeCallback))
        set(floe_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
        set(floe_curl_setopt_callback(handle, CURLOPT_HEADERFUNCTION, headerCallback))
        set(floe_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context))
        switch request.method {
        case "GET":
            break
        case "HEAD":
            set(floe_curl_setopt_long(handle, CURLOPT_NOBODY, 1))
        case "PUT", "POST":
            set(floe_curl_setopt_long(handle, CURLOPT_UPLOAD, 1))
            set(floe_curl_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(body.readableBytes)))
            set(floe_curl_setopt_callback(handle, CURLOPT_READFUNCTION, readCallback))
            set(floe_curl_setopt_pointer(handle, CURLOPT_READDATA, context))
            if request.method == "POST" { set(floe_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, "POST")) }
        default:
            set(floe_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method))
        }
        guard setupError == CURLE_OK else {
            throw ObjectStoreError.transport("curl setup: \(String(cString: curl_easy_strerror(setupError)))")
        }

        let result = withExtendedLifetime(transfer) { curl_easy_perform(handle) }
        if transfer.overLimit {
            throw ObjectStoreError.http(status: 0, code: "ResponseTooLarge", message: "response body larger than \(request.maxResponseBytes) bytes")
        }
        guard result == CURLE_OK else {
            let reason = "\(request.method) \(request.path): \(String(cString: curl_easy_strerror(result)))"
            if result == CURLE_OPERATION_TIMEDOUT { throw ObjectStoreError.timedOut(reason) }
            throw ObjectStoreError.transport(reason)
        }
        var status = 0
        _ = floe_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        var connects = 0
        _ = floe_curl_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connects)
        return HTTPResponse(status: status, headers: transfer.headers, body: transfer.body, connectionsOpened: connects)
    }

    /// Whole milliseconds, at least 1 and at most a day, so a configured value cannot overflow curl's long.
    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        guard seconds < 86_400 else { return 86_400_000 }
        return max(1, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    /// Percent-encodes everything but unreserved characters (and `/` in paths), as SigV4 canonicalises.
    static func encode(_ text: String, keepSlash: Bool) -> String {
        percentEncode(text) { byte, _ in
            isPlainASCII(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "~") || (keepSlash && byte == UInt8(ascii: "/"))
        }
    }

    static func encodePath(_ path: String) -> String {
        encode(path, keepSlash: true)
    }

    /// Sorted by name with explicit `=` on empty values: the canonical query SigV4 signs, sent as-is
    /// so libcurl's signature matches regardless of how it canonicalises.
    static func encodeQuery(_ query: [(String, String)]) -> String {
        guard !query.isEmpty else { return "" }
        let encoded = query.map { (encode($0.0, keepSlash: false), encode($0.1, keepSlash: false)) }
            .sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }
        return "?" + encoded.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }
}
