import NIOCore
import Testing
@testable import KafkaProtocol

/// Encodes `value`, decodes it back and re-encodes the result; records any mismatch.
func checkRoundTrip<M: KafkaMessage>(_ value: M, version: Int16, label: String) throws {
    var encoded = ByteBuffer()
    try value.encode(to: &encoded, version: version)
    var reader = encoded
    let decoded = try M(from: &reader, version: version)
    #expect(reader.readableBytes == 0, "\(label): \(reader.readableBytes) bytes left after decoding")
    #expect(decoded == value, "\(label): decoded value differs")
    var reencoded = ByteBuffer()
    try decoded.encode(to: &reencoded, version: version)
    #expect(reencoded == encoded, "\(label): re-encoded bytes differ")
}

func roundTripAllVersions<M: SampleableMessage>(_ type: M.Type, seed: UInt64) throws -> Int {
    var cases = 0
    for version in M.validVersions {
        for nulls in [false, true] {
            var sampler = Sampler(seed: seed &+ UInt64(version) &* 1_000_003, nulls: nulls)
            let value = M.sample(version: version, &sampler)
            try checkRoundTrip(value, version: version, label: "\(M.self) v\(version) nulls=\(nulls)")
        }
        cases += 1
    }
    return cases
}

@Suite struct GeneratedRoundTripTests {
    @Test func everyMessageAtEveryVersion() throws {
        var cases = 0
        for seed: UInt64 in [1, 0xDEAD_BEEF] {
            cases = 0
            for type in allGeneratedMessageTypes {
                cases += try roundTripAllVersions(type, seed: seed)
            }
        }
        #expect(allGeneratedMessageTypes.count == generatedSchemaCount)
        #expect(cases == generatedMessageVersionCount)
        // Upstream snapshot: 186 schemas outside metadata/; guards against the list silently shrinking.
        #expect(generatedSchemaCount >= 186)
    }

    @Test func defaultValuesRoundTripWhereRepresentable() throws {
        for type in allGeneratedMessageTypes {
            try defaultRoundTrip(type)
        }
    }

    private func defaultRoundTrip<M: SampleableMessage>(_ type: M.Type) throws {
        for version in M.validVersions {
            var encoded = ByteBuffer()
            do {
                try M().encode(to: &encoded, version: version)
            } catch .unexpectedNull {
                // Defaults of non-nullable records fields are null, exactly as in Kafka.
                continue
            }
            var reader = encoded
            #expect(try M(from: &reader, version: version) == M())
            #expect(reader.readableBytes == 0)
        }
    }

    @Test func versionsOutsideTheSchemaAreRejected() {
        var empty = ByteBuffer()
        #expect(throws: ProtocolError.unsupportedVersion(apiKey: 0, version: 12)) {
            try ProduceRequest(from: &empty, version: 12)
        }
        #expect(throws: ProtocolError.unsupportedVersion(apiKey: 3, version: -1)) {
            try MetadataRequest().encode(to: &empty, version: -1)
        }
    }

    @Test func nonIgnorableFieldMissingFromVersionIsRefused() {
        var request = ProduceRequest()
        request.transactionalId = "txn"
        var buffer = ByteBuffer()
        #expect(throws: ProtocolError.fieldNotRepresentable(field: "ProduceRequest.TransactionalId", version: 2)) {
            try request.encode(to: &buffer, version: 2)
        }
    }

    @Test func nullOutsideNullableVersionsIsRefused() {
        // MetadataRequest.Topics is nullable from v1 only.
        var request = MetadataRequest()
        request.topics = nil
        var buffer = ByteBuffer()
        #expect(throws: ProtocolError.unexpectedNull(field: "MetadataRequest.Topics")) {
            try request.encode(to: &buffer, version: 0)
        }
    }

    @Test func unknownTaggedFieldsAreDroppedInNonFlexibleVersions() throws {
        var request = MetadataRequest()
        request.unknownTaggedFields = [UnknownTaggedField(tag: 7, data: ByteBuffer(bytes: [1, 2]))]
        var buffer = ByteBuffer()
        try request.encode(to: &buffer, version: 8)
        var reader = buffer
        let decoded = try MetadataRequest(from: &reader, version: 8)
        #expect(decoded.unknownTaggedFields.isEmpty)
    }

    @Test func apiKeyTableMatchesTypes() {
        for key in ApiKey.allCases {
            #expect(key.requestType.apiKey == key)
            #expect(key.responseType.apiKey == key)
            #expect(key.requestType.validVersions == key.validVersions)
            #expect(key.requestType.firstFlexibleVersion == key.firstFlexibleVersion)
        }
        #expect(ApiKey.produce.rawValue == 0)
        #expect(ApiKey.apiVersions.name == "ApiVersions")
        #expect(ApiKey.apiVersions.responseHeaderVersion(3) == 0)
        #expect(ApiKey.metadata.responseHeaderVersion(9) == 1)
        #expect(ApiKey.metadata.requestHeaderVersion(8) == 1)
        #expect(ApiKey.metadata.requestHeaderVersion(9) == 2)
        #expect(ApiKey.controlledShutdown.requestHeaderVersion(0) == 0)
        #expect(ApiKey.controlledShutdown.requestHeaderVersion(1) == 1)
        #expect(ApiKey.endTxn.latestVersionUnstable)
        #expect(!ApiKey.produce.latestVersionUnstable)
        #expect(ApiKey.allCases.filter { $0.rawValue < 10000 }.count == 88)
    }
}
