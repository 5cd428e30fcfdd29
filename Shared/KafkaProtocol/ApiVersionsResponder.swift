import NIOCore

/// Answers ApiVersions requests following Kafka's rules for that one api (it must always be answered).
public enum ApiVersionsResponder {
    /// An encoded response body and how it was encoded.
    public struct Reply: Sendable, Hashable {
        /// The version the body is encoded at (the request's, or 0 for a too-new request).
        public var version: Int16
        /// The encoded response body (without the response header, which is always v0 for ApiVersions).
        public var body: ByteBuffer
        /// The error code placed in the body.
        public var errorCode: KafkaErrorCode
    }

    /// Builds the response to an ApiVersions request of `version` whose body is `body`.
    ///
    /// - A version above the advertised maximum (or negative) gets UNSUPPORTED_VERSION and the ApiVersions
    ///   range in a v0 body; the request body is not parsed (KIP-511).
    /// - A body that does not parse, or (v3+) a client software name or version outside
    ///   `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`, gets INVALID_REQUEST at the request's version.
    /// - Otherwise every advertised api, throttle 0 and no feature tags.
    public static func respond(version: Int16, body: ByteBuffer, advertised: AdvertisedVersions) -> Reply {
        let ownRange: ClosedRange<Int16> = advertised.range(for: .apiVersions) ?? ApiKey.apiVersions.validVersions
        let supportedMaximum = Swift.min(ownRange.upperBound, ApiVersionsResponse.validVersions.upperBound)
        guard version >= 0, version <= supportedMaximum else {
            var response = ApiVersionsResponse()
            response.errorCode = KafkaErrorCode.unsupportedVersion.rawValue
            var entry = ApiVersionsResponse.ApiVersion()
            entry.apiKey = ApiKey.apiVersions.rawValue
            entry.minVersion = ownRange.lowerBound
            entry.maxVersion = supportedMaximum
            response.apiKeys = [entry]
            return encode(response, version: 0, error: .unsupportedVersion)
        }

        var reader = body
        let request: ApiVersionsRequest
        do {
            request = try ApiVersionsRequest(from: &reader, version: version)
        } catch {
            return encode(ApiVersionsResponse.invalidRequest, version: version, error: .invalidRequest)
        }
        if version >= 3 {
            guard isValidSoftwareField(request.clientSoftwareName), isValidSoftwareField(request.clientSoftwareVersion) else {
                return encode(ApiVersionsResponse.invalidRequest, version: version, error: .invalidRequest)
            }
        }

        var response = ApiVersionsResponse()
        response.errorCode = KafkaErrorCode.none.rawValue
        response.throttleTimeMs = 0
        var keys: [ApiVersionsResponse.ApiVersion] = []
        keys.reserveCapacity(advertised.entries.count)
        for item in advertised.entries {
            var entry = ApiVersionsResponse.ApiVersion()
            entry.apiKey = item.apiKey.rawValue
            entry.minVersion = item.advertised.lowerBound
            entry.maxVersion = item.advertised.upperBound
            keys.append(entry)
        }
        response.apiKeys = keys
        return encode(response, version: version, error: .none)
    }

    /// Kafka's check for ClientSoftwareName/Version: `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`.
    public static func isValidSoftwareField(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        guard let first = bytes.first, let last = bytes.last else { return false }
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
        }
        guard isAlphanumeric(first), isAlphanumeric(last) else { return false }
        return bytes.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    private static func encode(_ response: ApiVersionsResponse, version: Int16, error: KafkaErrorCode) -> Reply {
        var buffer = ByteBuffer()
        do {
            try response.encode(to: &buffer, version: version)
        } catch {
            // Every value set above is representable at every version in 0...max; reaching this is a codec bug.
            // Fall back to the smallest valid answer rather than trapping.
            buffer.clear()
            buffer.writeKafkaInteger(KafkaErrorCode.unknownServerError.rawValue)
            buffer.writeKafkaInteger(Int32(0))
            return Reply(version: 0, body: buffer, errorCode: .unknownServerError)
        }
        return Reply(version: version, body: buffer, errorCode: error)
    }
}

extension ApiVersionsResponse {
    fileprivate static var invalidRequest: ApiVersionsResponse {
        var response = ApiVersionsResponse()
        response.errorCode = KafkaErrorCode.invalidRequest.rawValue
        return response
    }
}
