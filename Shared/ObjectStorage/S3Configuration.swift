/// Settings of an S3 store; `S3Configuration(url:environment:)` reads them from an `s3://` URL.
public struct S3Configuration: Sendable {
    /// Bucket name (path-style addressing: requests go to `endpoint/bucket/key`).
    public var bucket: String
    /// Scheme, host and port, e.g. `http://127.0.0.1:8333`.
    public var endpoint: String
    /// Signing region.
    public var region: String
    public var accessKeyID: String
    public var secretAccessKey: String
    /// Sent as `x-amz-security-token` when set.
    public var sessionToken: String?
    /// Time allowed to open a connection.
    public var connectTimeout: Duration = .seconds(5)
    /// Time allowed for one whole request (one attempt).
    public var requestTimeout: Duration = .seconds(60)
    /// Attempts per request, the first included, for retryable failures (5xx, 408, 429, timeouts, connection errors).
    public var maxAttempts = 6
    /// First backoff ceiling; each retry doubles it up to `maxBackoff`; the wait is uniform in [0, ceiling] (full jitter).
    public var baseBackoff: Duration = .milliseconds(50)
    public var maxBackoff: Duration = .seconds(3)
    /// Objects of at least this size go up as multipart uploads.
    public var multipartThreshold = 16 << 20
    /// Size of every multipart part but the last; S3 requires at least 5 MiB.
    public var partSize = 8 << 20
    /// Parts of one multipart upload in flight at once.
    public var multipartConcurrency = 4
    /// Keys per ListObjectsV2 page (S3 caps it at 1000).
    public var listPageSize = 1000
    /// Keys per DeleteObjects request (S3 caps it at 1000).
    public var deleteBatchSize = 1000
    /// Threads running libcurl, each with its own reused connection(s).
    public var workerThreads = 4

    public init(bucket: String, endpoint: String, region: String = "us-east-1", accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.bucket = bucket
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.region = region
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// Parses `s3://BUCKET?endpoint=http://HOST:PORT&region=R`; credentials come from `environment`
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). Optional integer parameters
    /// tune the client: `max_attempts`, `connect_timeout_ms`, `request_timeout_ms`,
    /// `multipart_threshold`, `part_size`, `multipart_concurrency`, `threads`. Unknown parameters are
    /// an error, so a typo does not silently fall back to a default.
    public init(url: String, environment: [String: String]) throws {
        guard url.hasPrefix("s3://") else { throw ObjectStoreError.invalidURL("not an s3:// URL: \(url)") }
        let rest = url.dropFirst("s3://".count)
        let bucketPart = rest.prefix { $0 != "?" && $0 != "/" }
        guard !bucketPart.isEmpty else { throw ObjectStoreError.invalidURL("missing bucket: \(url)") }
        var parameters: [String: String] = [:]
        if let question = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: question)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard let name = percentDecode(parts[0]), let value = percentDecode(parts.count > 1 ? parts[1] : "") else {
                    throw ObjectStoreError.invalidURL("bad query parameter \(pair) in \(url)")
                }
                parameters[name] = value
            }
        }
        guard let endpoint = parameters["endpoint"], endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
            throw ObjectStoreError.invalidURL("endpoint=http(s)://HOST:PORT is required: \(url)")
        }
        guard let accessKey = environment["AWS_ACCESS_KEY_ID"], let secret = environment["AWS_SECRET_ACCESS_KEY"] else {
            throw ObjectStoreError.invalidURL("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set for \(url)")
        }
        self.init(
            bucket: String(bucketPart), endpoint: endpoint, region: parameters["region"] ?? "us-east-1",
            accessKeyID: accessKey, secretAccessKey: secret, sessionToken: environment["AWS_SESSION_TOKEN"]
        )
        for (name, value) in parameters where name != "endpoint" && name != "region" {
            guard let number = Int(value), number > 0 else {
                throw ObjectStoreError.invalidURL("parameter \(name) needs a positive integer, got \(value)")
            }
            switch name {
            case "max_attempts": maxAttempts = number
            case "connect_timeout_ms": connectTimeout = .milliseconds(number)
            case "request_timeout_ms": requestTimeout = .milliseconds(number)
            case "multipart_threshold": multipartThreshold = number
            case "part_size": partSize = number
            case "multipart_concurrency": multipartConcurrency = number
            case "threads": workerThreads = number
            default: throw ObjectStoreError.invalidURL("unknown parameter \(name) in \(url)")
            }
        }
        try validate()
    }

    func validate() throws {
        guard partSize >= 5 << 20 else { throw ObjectStoreError.invalidURL("part size must be at least 5 MiB") }
        guard multipartThreshold >= partSize else { throw ObjectStoreError.invalidURL("multipart threshold below part size") }
        guard maxAttempts >= 1, (1...256).contains(workerThreads), (1...64).contains(multipartConcurrency) else {
            throw ObjectStoreError.invalidURL("attempts must be positive, threads in 1...256, multipart concurrency in 1...64")
        }
        guard (1...1000).contains(listPageSize), (1...1000).contains(deleteBatchSize) else {
            throw ObjectStoreError.invalidURL("page and batch sizes must be in 1...1000")
        }
    }
}
