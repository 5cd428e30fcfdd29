import Logging
import NIOCore

/// An S3 (or S3-compatible) bucket over libcurl with SigV4, path-style addressing, retries with
/// full-jitter exponential backoff, multipart uploads for large objects and conditional create.
public final class S3ObjectStore: ObjectStore {
    /// The settings this store runs with.
    public let configuration: S3Configuration
    public let stats = ObjectStoreStats()
    private let transport: CurlTransport
    private let logger: Logger

    /// Opens a store; no request is made until the first call.
    public init(configuration: S3Configuration, logger: Logger) throws {
        try configuration.validate()
        self.configuration = configuration
        self.transport = CurlTransport(configuration: configuration)
        var logger = logger
        logger[metadataKey: "s3.bucket"] = "\(configuration.bucket)"
        self.logger = logger
    }

    /// Stops the worker threads once queued requests finish.
    public func shutdown() async throws {
        try await transport.shutdown()
    }

    /// Creates the bucket; succeeds if this account already owns it.
    public func createBucket() async throws {
        let response = try await send(HTTPRequest(method: "PUT", path: "/\(configuration.bucket)"))
        if response.status == 200 { return }
        let error = Self.httpError(response)
        if case let .http(_, code, _) = error, code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" { return }
        throw error
    }

    public func put(_ key: String, _ data: ByteBuffer) async throws {
        if data.readableBytes >= configuration.multipartThreshold {
            try await multipartPut(key, data)
            return
        }
        let response = try await send(HTTPRequest(method: "PUT", path: try path(key), body: data))
        guard response.status == 200 else { throw failure(response, key: key) }
    }

    public func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool {
        let request = HTTPRequest(method: "PUT", path: try path(key), headers: [("If-None-Match", "*")], body: data)
        let (response, ambiguous) = try await sendTracking(request, retryConflicts: true)
        switch response.status {
        case 200:
            return true
        case 412:
            // An earlier attempt may have created the object and lost its answer; if what is stored
            // now is byte-for-byte what we sent, that attempt was ours (or an identical write).
            if ambiguous, let info = try await head(key), info.size == data.readableBytes, info.etag == Digest.md5Hex(data) {
                logger.debug("conditional create retried after an ambiguous attempt; stored object matches", metadata: ["key": "\(key)"])
                return true
            }
            return false
        default:
            throw failure(response, key: key)
        }
    }

    public func get(_ key: String) async throws -> ByteBuffer {
        let response = try await send(HTTPRequest(method: "GET", path: try path(key)))
        guard response.status == 200 else { throw failure(response, key: key) }
        return response.body
    }

    public func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
        guard range.lowerBound >= 0 else { throw ObjectStoreError.invalidRange(key: key, range: range) }
        if range.isEmpty { return ByteBuffer() }
        var request = HTTPRequest(method: "GET", path: try path(key), headers: [("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")])
        // Room for an error document on top of the range itself.
        request.maxResponseBytes = range.count + 64 << 10
        let response = try await send(request, ranged: true)
        switch response.status {
        case 206:
            return response.body
        case 200:
            // A server that ignores Range sends the whole object; cut the slice out. This needs the
            // whole body, so the size cap does not apply here.
            var body = response.body
            guard range.lowerBound < body.readableBytes else { throw ObjectStoreError.invalidRange(key: key, range: range) }
            body.moveReaderIndex(forwardBy: range.lowerBound)
            return body.readSlice(length: min(range.count, body.readableBytes)) ?? ByteBuffer()
        case 416:
            throw ObjectStoreError.invalidRange(key: key, range: range)
        default:
            throw failure(response, key: key)
        }
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        let response = try await send(HTTPRequest(method: "HEAD", path: try path(key)))
        switch response.status {
        case 200:
            guard let length = response.headers["content-length"].flatMap({ Int($0) }) else {
                throw ObjectStoreError.http(status: 200, code: "MissingContentLength", message: "HEAD \(key) had no Content-Length")
            }
            return ObjectInfo(key: key, size: length, etag: Self.unquote(response.headers["etag"] ?? ""))
        case 404:
            return nil
        default:
            throw failure(response, key: key)
        }
    }

    public func delete(_ key: String) async throws {
        let response = try await send(HTTPRequest(method: "DELETE", path: try path(key)))
        guard response.status == 204 || response.status == 200 || response.status == 404 else { throw failure(response, key: key) }
    }

    public func delete(_ keys: [String]) async throws {
        var start = 0
        while start < keys.count {
            let chunk = keys[start..<min(start + configuration.deleteBatchSize, keys.count)]
            start += chunk.count
            try await deleteBatch(Array(chunk))
        }
    }

    private func deleteBatch(_ keys: [String]) async throws {
        for key in keys { _ = try path(key) }
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>true</Quiet>"
        for key in keys { xml += "<Object><Key>\(S3XML.escape(key))</Key></Object>" }
        xml += "</Delete>"
        let body = ByteBuffer(string: xml)
        let md5 = body.withUnsafeReadableBytes { Digest.md5($0) }
        let request = HTTPRequest(
            method: "POST", path: "/\(configuration.bucket)", query: [("delete", "")],
            headers: [("Content-MD5", Digest.base64(md5))], body: body
        )
        let response = try await send(request)
        guard response.status == 200 else { throw failure(response, key: keys.first ?? "") }
        let text = response.bodyText
        for error in S3XML.elements("Error", in: text) {
            let code = S3XML.first("Code", in: error) ?? ""
            if code == "NoSuchKey" { continue }
            let key = S3XML.first("Key", in: error) ?? ""
            throw ObjectStoreError.http(status: 200, code: code, message: "delete \(key): \(S3XML.first("Message", in: error) ?? "")")
        }
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        var result: [ObjectInfo] = []
        var token: String?
        var seenTokens: Set<String> = []
        while true {
            var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", String(configuration.listPageSize))]
            if let token { query.append(("continuation-token", token)) }
            let response = try await send(HTTPRequest(method: "GET", path: "/\(configuration.bucket)", query: query))
            guard response.status == 200 else { throw failure(response, key: prefix) }
            let text = response.bodyText
            for contents in S3XML.elements("Contents", in: text) {
                guard let key = S3XML.first("Key", in: contents), let size = S3XML.first("Size", in: contents).flatMap({ Int($0) }) else {
                    throw ObjectStoreError.http(status: 200, code: "MalformedListing", message: "entry without Key or Size")
                }
                result.append(ObjectInfo(key: key, size: size, etag: Self.unquote(S3XML.first("ETag", in: contents) ?? "")))
            }
            guard S3XML.first("IsTruncated", in: text) == "true" else { break }
            guard let next = S3XML.first("NextContinuationToken", in: text), seenTokens.insert(next).inserted else {
                throw ObjectStoreError.http(status: 200, code: "MalformedListing", message: "truncated listing without a new continuation token")
            }
            token = next
        }
        return result
    }

    /// Multipart uploads in progress under `prefix` (key, upload id): what a janitor would abort.
    public func listMultipartUploads(prefix: String) async throws -> [(key: String, uploadID: String)] {
        let request = HTTPRequest(method: "GET", path: "/\(configuration.bucket)", query: [("uploads", ""), ("prefix", prefix)])
        let response = try await send(request)
        guard response.status == 200 else { throw failure(response, key: prefix) }
        return S3XML.elements("Upload", in: response.bodyText).compactMap { upload in
            guard let key = S3XML.first("Key", in: upload), let id = S3XML.first("UploadId", in: upload) else { return nil }
            return (key, id)
        }
    }

    /// Aborts a multipart upload; its parts are discarded.
    public func abortMultipartUpload(key: String, uploadID: String) async throws {
        let response = try await send(HTTPRequest(method: "DELETE", path: try path(key), query: [("uploadId", uploadID)]))
        guard response.status == 204 || response.status == 200 || response.status == 404 else { throw failure(response, key: key) }
    }

    // MARK: - Multipart

    private func multipartPut(_ key: String, _ data: ByteBuffer) async throws {
        let objectPath = try path(key)
        // S3 allows at most 10,000 parts; fail before creating an upload that cannot complete.
        guard (data.readableBytes + configuration.partSize - 1) / configuration.partSize <= 10_000 else {
            throw ObjectStoreError.invalidKey("\(data.readableBytes) bytes need more than 10,000 parts of \(configuration.partSize) bytes")
        }
        let created = try await send(HTTPRequest(method: "POST", path: objectPath, query: [("uploads", "")]))
        guard created.status == 200, let uploadID = S3XML.first("UploadId", in: created.bodyText) else {
            throw failure(created, key: key)
        }
        do {
            let partSize = configuration.partSize
            let partCount = (data.readableBytes + partSize - 1) / partSize
            var parts = [String](repeating: "", count: partCount)
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                var next = 0
                func uploadPart(_ index: Int) {
                    let start = index * partSize
                    let part = data.getSlice(at: data.readerIndex + start, length: min(partSize, data.readableBytes - start)) ?? ByteBuffer()
                    let query = [("partNumber", String(index + 1)), ("uploadId", uploadID)]
                    group.addTask {
                        let response = try await self.send(HTTPRequest(method: "PUT", path: objectPath, query: query, body: part))
                        guard response.status == 200, let etag = response.headers["etag"] else { throw self.failure(response, key: key) }
                        return (index, etag)
                    }
                }
                while next < min(configuration.multipartConcurrency, partCount) {
                    uploadPart(next)
                    next += 1
                }
                // Leaving the group waits for every part in flight, so the abort below never races a part upload.
                while let (index, etag) = try await group.next() {
                    parts[index] = etag
                    if next < partCount {
                        uploadPart(next)
                        next += 1
                    }
                }
            }
            var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CompleteMultipartUpload>"
            for (index, etag) in parts.enumerated() {
                xml += "<Part><PartNumber>\(index + 1)</PartNumber><ETag>\(S3XML.escape(etag))</ETag></Part>"
            }
            xml += "</CompleteMultipartUpload>"
            let completed = try await send(
                HTTPRequest(method: "POST", path: objectPath, query: [("uploadId", uploadID)], body: ByteBuffer(string: xml))
            )
            // S3 can answer 200 and still fail, with an Error document in the body.
            guard completed.status == 200, S3XML.elements("Error", in: completed.bodyText).isEmpty else {
                throw failure(completed, key: key)
            }
        } catch {
            logger.warning("multipart upload failed; aborting it", metadata: ["key": "\(key)", "error": "\(error)"])
            do {
                try await abortMultipartUpload(key: key, uploadID: uploadID)
            } catch let abortError {
                logger.error("abort of multipart upload failed", metadata: ["key": "\(key)", "upload": "\(uploadID)", "error": "\(abortError)"])
            }
            throw error
        }
    }

    // MARK: - Requests and retries

    private func path(_ key: String) throws -> String {
        guard !key.isEmpty, key.utf8.count <= 1024 else { throw ObjectStoreError.invalidKey("key must be 1...1024 bytes") }
        return "/\(configuration.bucket)/\(key)"
    }

    private func send(_ request: HTTPRequest, ranged: Bool = false) async throws -> HTTPResponse {
        try await sendTracking(request, ranged: ranged).response
    }

    /// Sends with retries. `ambiguous` tells whether an earlier attempt may have reached the server
    /// and taken effect (a 5xx or a lost connection), which a conditional create must account for.
    private func sendTracking(
        _ request: HTTPRequest, ranged: Bool = false, retryConflicts: Bool = false
    ) async throws -> (response: HTTPResponse, ambiguous: Bool) {
        var ambiguous = false
        var attempt = 1
        while true {
            let sent = request.body?.readableBytes ?? 0
            stats.update {
                $0.requests += 1
                $0.bytesSent += sent
                if ranged { $0.rangedGets += 1 }
            }
            var retryReason: String
            do {
                let response = try await transport.perform(request)
                stats.update {
                    $0.bytesReceived += response.body.readableBytes
                    $0.connectionsOpened += response.connectionsOpened
                }
                let retryable = response.status >= 500 || response.status == 408 || response.status == 429
                    || (retryConflicts && response.status == 409)
                if !retryable || attempt >= configuration.maxAttempts {
                    if retryable || response.status >= 400 && response.status != 404 && response.status != 412 && response.status != 416 {
                        stats.update { $0.failures += 1 }
                    }
                    return (response, ambiguous)
                }
                retryReason = "HTTP \(response.status)"
                if response.status >= 500 { ambiguous = true }
            } catch let error as ObjectStoreError {
                switch error {
                case .transport, .timedOut:
                    guard attempt < configuration.maxAttempts else {
                        stats.update { $0.failures += 1 }
                        throw error
                    }
                    retryReason = error.description
                    ambiguous = true
                default:
                    stats.update { $0.failures += 1 }
                    throw error
                }
            }
            stats.update { $0.retries += 1 }
            let delay = backoff(attempt: attempt)
            logger.debug("retrying object store request", metadata: [
                "method": "\(request.method)", "path": "\(request.path)", "attempt": "\(attempt)",
                "reason": "\(retryReason)", "delay_ms": "\(delay.components.attoseconds / 1_000_000_000_000_000 + delay.components.seconds * 1000)",
            ])
            try await Task.sleep(for: delay)
            attempt += 1
        }
    }

    /// Full jitter: uniform in [0, min(max, base·2^(attempt-1))].
    private func backoff(attempt: Int) -> Duration {
        let base = configuration.baseBackoff.components
        let baseNanos = Double(base.seconds) * 1e9 + Double(base.attoseconds) / 1e9
        let maxParts = configuration.maxBackoff.components
        let maxNanos = Double(maxParts.seconds) * 1e9 + Double(maxParts.attoseconds) / 1e9
        let ceiling = min(maxNanos, baseNanos * Double(1 << min(attempt - 1, 30)))
        return .nanoseconds(Int64(Double.random(in: 0...max(ceiling, 1))))
    }

    private func failure(_ response: HTTPResponse, key: String) -> ObjectStoreError {
        switch response.status {
        case 404 where S3XML.first("Code", in: response.bodyText).map({ $0 == "NoSuchKey" }) ?? true:
            return .notFound(key: key)
        case 412:
            return .preconditionFailed(key: key)
        default:
            return Self.httpError(response)
        }
    }

    static func httpError(_ response: HTTPResponse) -> ObjectStoreError {
        let text = response.bodyText
        let code = S3XML.first("Code", in: text) ?? ""
        let message = S3XML.first("Message", in: text) ?? (text.isEmpty ? "no body" : String(text.prefix(200)))
        return .http(status: response.status, code: code, message: message)
    }

    private static func unquote(_ etag: String) -> String {
        etag.count >= 2 && etag.hasPrefix("\"") && etag.hasSuffix("\"") ? String(etag.dropFirst().dropLast()) : etag
    }
}
