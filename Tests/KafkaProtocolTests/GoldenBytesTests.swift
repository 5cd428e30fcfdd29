import NIOCore
import Testing
@testable import KafkaProtocol

/// Hand-computed encodings: a bug shared by the encoder and the decoder cannot pass these.
@Suite struct GoldenBytesTests {
    private func check<M: KafkaMessage>(_ value: M, version: Int16, _ expected: [UInt8]) throws {
        var buffer = ByteBuffer()
        try value.encode(to: &buffer, version: version)
        #expect(Array(buffer.readableBytesView) == expected)
        var reader = ByteBuffer(bytes: expected)
        let decoded = try M(from: &reader, version: version)
        #expect(decoded == value)
        #expect(reader.readableBytes == 0)
    }

    private func header(clientId: String?) -> RequestHeader {
        var header = RequestHeader()
        header.requestApiKey = 18
        header.requestApiVersion = 3
        header.correlationId = 7
        header.clientId = clientId
        return header
    }

    @Test func requestHeaderV1NullClientId() throws {
        try check(header(clientId: nil), version: 1, [0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0xFF, 0xFF])
    }

    @Test func requestHeaderV2NullClientIdKeepsClassicStringAndAddsTags() throws {
        try check(header(clientId: nil), version: 2, [0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0xFF, 0xFF, 0x00])
    }

    @Test func requestHeaderV2WithClientId() throws {
        try check(header(clientId: "ab"), version: 2, [0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0x00, 0x02, 0x61, 0x62, 0x00])
    }

    @Test func requestHeaderV0HasNoClientId() throws {
        // Absent in v0, so a decoder fills in the schema default "" (not null).
        var value = header(clientId: "")
        value.requestApiKey = 7
        value.requestApiVersion = 0
        try check(value, version: 0, [0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07])
    }

    @Test func apiVersionsV3Request() throws {
        var request = ApiVersionsRequest()
        request.clientSoftwareName = "kcat"
        request.clientSoftwareVersion = "1.7"
        try check(request, version: 3, [0x05, 0x6B, 0x63, 0x61, 0x74, 0x04, 0x31, 0x2E, 0x37, 0x00])
    }

    @Test func metadataV0EmptyTopics() throws {
        try check(MetadataRequest(), version: 0, [0x00, 0x00, 0x00, 0x00])
    }

    @Test func metadataV1NullTopics() throws {
        var request = MetadataRequest()
        request.topics = nil
        try check(request, version: 1, [0xFF, 0xFF, 0xFF, 0xFF])
    }

    @Test func metadataV9NullTopicsWithDefaults() throws {
        var request = MetadataRequest()
        request.topics = nil
        // topics null (compact 0), allow_auto_topic_creation default true, two include flags false, no tags.
        try check(request, version: 9, [0x00, 0x01, 0x00, 0x00, 0x00])
    }

    @Test func apiVersionsV3ResponseWithTaggedAndUnknownFields() throws {
        var response = ApiVersionsResponse()
        var entry = ApiVersionsResponse.ApiVersion()
        entry.apiKey = 18
        entry.minVersion = 0
        entry.maxVersion = 4
        response.apiKeys = [entry]
        response.finalizedFeaturesEpoch = 5
        response.unknownTaggedFields = [UnknownTaggedField(tag: 9, data: ByteBuffer(bytes: [0xAA]))]
        try check(response, version: 3, [
            0x00, 0x00,  // error_code
            0x02,  // compact array of 1
            0x00, 0x12, 0x00, 0x00, 0x00, 0x04, 0x00,  // key 18, 0...4, empty tags
            0x00, 0x00, 0x00, 0x00,  // throttle_time_ms
            0x02,  // two tagged fields
            0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,  // tag 1: finalized_features_epoch = 5
            0x09, 0x01, 0xAA,  // unknown tag 9 kept
        ])
    }

    @Test func produceV3Request() throws {
        var partition = ProduceRequest.PartitionProduceData()
        partition.index = 0
        partition.records = ByteBuffer(bytes: [1, 2, 3])
        var topic = ProduceRequest.TopicProduceData()
        topic.name = "t"
        topic.partitionData = [partition]
        var request = ProduceRequest()
        request.acks = -1
        request.timeoutMs = 1000
        request.topicData = [topic]
        try check(request, version: 3, [
            0xFF, 0xFF,  // transactional_id null
            0xFF, 0xFF,  // acks -1
            0x00, 0x00, 0x03, 0xE8,  // timeout 1000
            0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x74,  // one topic "t"
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,  // one partition, index 0
            0x00, 0x00, 0x00, 0x03, 0x01, 0x02, 0x03,  // records
        ])
    }

    @Test func nullableStructUsesPresenceMarker() throws {
        var response = ConsumerGroupHeartbeatResponse()
        response.assignment = nil
        var buffer = ByteBuffer()
        try response.encode(to: &buffer, version: 0)
        // error_code, error_message (null), member_id (null), member_epoch, heartbeat_interval_ms...
        let bytes = Array(buffer.readableBytesView)
        #expect(bytes.suffix(2) == [0xFF, 0x00])
        response.assignment = ConsumerGroupHeartbeatResponse.Assignment()
        buffer.clear()
        try response.encode(to: &buffer, version: 0)
        // Present marker 1, empty compact array (1), empty struct tags (0), then the message tags.
        #expect(Array(buffer.readableBytesView).suffix(4) == [0x01, 0x01, 0x00, 0x00])
    }

    @Test func tagsOutOfOrderAreRejected() {
        // ApiVersions v3 response body with tagged fields 3 then 1.
        var buffer = ByteBuffer(bytes: [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x01, 0x00, 0x01, 0x08, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(throws: ProtocolError.invalidTaggedField(tag: 1)) {
            try ApiVersionsResponse(from: &buffer, version: 3)
        }
    }

    @Test func knownTagWithWrongSizeIsRejected() {
        // Tag 1 (int64) with a 9-byte payload.
        var buffer = ByteBuffer(bytes: [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x09, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        #expect(throws: ProtocolError.invalidTaggedField(tag: 1)) {
            try ApiVersionsResponse(from: &buffer, version: 3)
        }
    }

    @Test func unknownTagCollidingWithKnownTagIsRefusedOnEncode() {
        var response = ApiVersionsResponse()
        response.finalizedFeaturesEpoch = 5
        response.unknownTaggedFields = [UnknownTaggedField(tag: 1, data: ByteBuffer(bytes: [0]))]
        var buffer = ByteBuffer()
        #expect(throws: ProtocolError.invalidTaggedField(tag: 1)) {
            try response.encode(to: &buffer, version: 3)
        }
    }
}
