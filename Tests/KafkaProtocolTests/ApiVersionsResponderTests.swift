import NIOCore
import Testing
@testable import KafkaProtocol

@Suite struct ApiVersionsResponderTests {
    private func requestBody(version: Int16, name: String = "floe-test", softwareVersion: String = "1.0.0") throws -> ByteBuffer {
        var request = ApiVersionsRequest()
        if version >= 3 {
            request.clientSoftwareName = name
            request.clientSoftwareVersion = softwareVersion
        }
        var buffer = ByteBuffer()
        try request.encode(to: &buffer, version: version)
        return buffer
    }

    private func decode(_ reply: ApiVersionsResponder.Reply) throws -> ApiVersionsResponse {
        var body = reply.body
        let response = try ApiVersionsResponse(from: &body, version: reply.version)
        #expect(body.readableBytes == 0)
        return response
    }

    @Test(arguments: [Int16(0), 1, 2, 3, 4])
    func answersEverySupportedVersionWithTheFullTable(version: Int16) throws {
        let reply = ApiVersionsResponder.respond(version: version, body: try requestBody(version: version), advertised: .floe)
        #expect(reply.version == version)
        #expect(reply.errorCode == .none)
        let response = try decode(reply)
        #expect(response.errorCode == 0)
        #expect(response.throttleTimeMs == 0)
        #expect(response.apiKeys.count == AdvertisedVersions.floe.entries.count)
        let produce = response.apiKeys.first { $0.apiKey == ApiKey.produce.rawValue }
        #expect(produce?.minVersion == 0)
        #expect(produce?.maxVersion == 9)
        #expect(response.apiKeys.map(\.apiKey) == response.apiKeys.map(\.apiKey).sorted())
        #expect(response.supportedFeatures.isEmpty)
        #expect(response.finalizedFeatures.isEmpty)
        #expect(response.finalizedFeaturesEpoch == -1)
        #expect(!response.zkMigrationReady)
    }

    @Test func tooNewVersionGetsV0BodyWithUnsupportedVersion() throws {
        // The body is garbage on purpose: it must not be parsed.
        let reply = ApiVersionsResponder.respond(version: 7, body: ByteBuffer(bytes: [0xFF, 0x13]), advertised: .floe)
        #expect(reply.version == 0)
        #expect(reply.errorCode == .unsupportedVersion)
        // Hand-decoded v0 layout: error_code int16, count int32, (key, min, max) int16 each.
        #expect(Array(reply.body.readableBytesView) == [0x00, 0x23, 0x00, 0x00, 0x00, 0x01, 0x00, 0x12, 0x00, 0x00, 0x00, 0x04])
        #expect(ApiKey.apiVersions.responseHeaderVersion(7) == 0)
        #expect(ApiKey.apiVersions.responseHeaderVersion(3) == 0)
    }

    @Test func negativeVersionIsTreatedAsUnsupported() throws {
        let reply = ApiVersionsResponder.respond(version: -1, body: ByteBuffer(), advertised: .floe)
        #expect(reply.version == 0)
        #expect(reply.errorCode == .unsupportedVersion)
    }

    @Test func advertisedMaximumBelowSchemaMaximumIsHonoured() throws {
        let limited = AdvertisedVersions([.init(.apiVersions, 0...2), .init(.metadata, 0...12)])
        let reply = ApiVersionsResponder.respond(version: 3, body: try requestBody(version: 3), advertised: limited)
        #expect(reply.errorCode == .unsupportedVersion)
        let response = try decode(reply)
        #expect(response.apiKeys.count == 1)
        #expect(response.apiKeys.first?.maxVersion == 2)
    }

    @Test(arguments: ["", "-lead", "trail.", "sp ace", "ünï", "a_b"])
    func invalidSoftwareNameIsInvalidRequest(name: String) throws {
        let reply = ApiVersionsResponder.respond(version: 3, body: try requestBody(version: 3, name: name), advertised: .floe)
        #expect(reply.version == 3)
        #expect(reply.errorCode == .invalidRequest)
        let response = try decode(reply)
        #expect(response.errorCode == 42)
        #expect(response.apiKeys.isEmpty)
    }

    @Test func invalidSoftwareVersionIsInvalidRequest() throws {
        let reply = ApiVersionsResponder.respond(version: 4, body: try requestBody(version: 4, softwareVersion: "1.0 beta"), advertised: .floe)
        #expect(reply.errorCode == .invalidRequest)
    }

    @Test(arguments: ["a", "librdkafka", "apache-kafka-java", "2.0.2", "v1.2-rc.3", "A9"])
    func validSoftwareFields(name: String) {
        #expect(ApiVersionsResponder.isValidSoftwareField(name))
    }

    @Test func softwareNamesAreNotCheckedBeforeV3() throws {
        // v0-2 bodies carry no software fields at all.
        let reply = ApiVersionsResponder.respond(version: 2, body: ByteBuffer(), advertised: .floe)
        #expect(reply.errorCode == .none)
    }

    @Test func truncatedV3BodyIsInvalidRequest() throws {
        let reply = ApiVersionsResponder.respond(version: 3, body: ByteBuffer(bytes: [0x05, 0x61]), advertised: .floe)
        #expect(reply.errorCode == .invalidRequest)
        #expect(reply.version == 3)
    }

    @Test func restrictedProfileAdvertisesOnlyImplementedKeysPlusApiVersions() throws {
        let profile = AdvertisedVersions.floe.restricted(to: [.metadata, .produce])
        #expect(profile.entries.map(\.apiKey) == [.produce, .metadata, .apiVersions])
        let reply = ApiVersionsResponder.respond(version: 0, body: ByteBuffer(), advertised: profile)
        let response = try decode(reply)
        #expect(response.apiKeys.map(\.apiKey) == [0, 3, 18])
    }
}

@Suite struct AdvertisedVersionsTests {
    @Test func profileLiesInsideSchemaRangesAndSkipsUnstableVersions() {
        for entry in AdvertisedVersions.floe.entries {
            let valid = entry.apiKey.validVersions
            #expect(valid.contains(entry.advertised.lowerBound) && valid.contains(entry.advertised.upperBound), "\(entry.apiKey)")
            if entry.apiKey.latestVersionUnstable {
                // ConsumerGroupHeartbeat v1 is marked unstable in this snapshot but stable since Kafka 4.0.
                #expect(entry.advertised.upperBound < valid.upperBound || entry.apiKey == .consumerGroupHeartbeat, "\(entry.apiKey)")
            }
        }
    }

    @Test func produceIsAdvertisedFromZeroButImplementedFromThree() {
        let profile = AdvertisedVersions.floe
        #expect(profile.range(for: .produce) == 0...9)
        #expect(profile.entry(for: .produce)?.implementedMinimum == 3)
        #expect(!profile.isSupported(.produce, 2))
        #expect(profile.isSupported(.produce, 3))
        #expect(profile.isSupported(.produce, 9))
        #expect(!profile.isSupported(.produce, 10))
        #expect(profile.range(for: .fetch) == 4...12)
        #expect(profile.range(for: .leaderAndIsr) == nil)
        #expect(!profile.isSupported(.leaderAndIsr, 0))
    }

    @Test func compactSummaryKeysArePresent() {
        let expected: [ApiKey: ClosedRange<Int16>] = [
            .apiVersions: 0...4, .metadata: 0...12, .fetch: 4...12, .listOffsets: 1...7, .offsetForLeaderEpoch: 2...4,
            .findCoordinator: 0...4, .joinGroup: 0...9, .syncGroup: 0...5, .heartbeat: 0...4, .leaveGroup: 0...5,
            .offsetCommit: 2...9, .offsetFetch: 1...9, .consumerGroupHeartbeat: 0...1, .consumerGroupDescribe: 0...0,
            .initProducerId: 0...4, .addPartitionsToTxn: 0...3, .addOffsetsToTxn: 0...3, .endTxn: 0...3,
            .txnOffsetCommit: 0...3, .saslHandshake: 0...1, .saslAuthenticate: 0...2, .createTopics: 2...7,
            .deleteTopics: 1...6, .createPartitions: 0...3, .describeConfigs: 1...4, .alterConfigs: 0...2,
            .incrementalAlterConfigs: 0...1, .describeCluster: 0...1, .listGroups: 0...5, .describeGroups: 0...5,
            .deleteGroups: 0...2, .offsetDelete: 0...0, .deleteRecords: 0...2, .produce: 0...9,
        ]
        #expect(AdvertisedVersions.floe.entries.count == expected.count)
        for (key, range) in expected {
            #expect(AdvertisedVersions.floe.range(for: key) == range, "\(key)")
        }
    }
}

@Suite struct KafkaErrorCodeTests {
    @Test func codesAreContiguousFromMinusOne() {
        let raw = KafkaErrorCode.allCases.map(\.rawValue)
        #expect(raw == Array(-1...133))
    }

    @Test func wellKnownCodes() {
        #expect(KafkaErrorCode.none.rawValue == 0)
        #expect(KafkaErrorCode.unknownServerError.name == "UNKNOWN_SERVER_ERROR")
        #expect(KafkaErrorCode.unsupportedVersion.rawValue == 35)
        #expect(KafkaErrorCode.invalidRequest.rawValue == 42)
        #expect(KafkaErrorCode.notLeaderOrFollower.rawValue == 6)
        #expect(KafkaErrorCode.fencedLeaderEpoch.rawValue == 74)
        #expect(KafkaErrorCode.unknownTopicId.rawValue == 100)
        #expect(KafkaErrorCode.staleMemberEpoch.rawValue == 113)
        #expect(KafkaErrorCode.transactionAbortable.rawValue == 120)
        #expect(KafkaErrorCode(rawValue: 134) == nil)
    }

    @Test func namesAreUpperSnakeAndUnique() {
        let names = KafkaErrorCode.allCases.map(\.name)
        #expect(Set(names).count == names.count)
        for name in names {
            #expect(name.allSatisfy { $0.isUppercase || $0 == "_" }, "\(name)")
        }
    }

    @Test func retriability() {
        let retriable: [KafkaErrorCode] = [
            .corruptMessage, .unknownTopicOrPartition, .leaderNotAvailable, .notLeaderOrFollower, .requestTimedOut,
            .networkException, .coordinatorLoadInProgress, .coordinatorNotAvailable, .notCoordinator,
            .notEnoughReplicas, .fencedLeaderEpoch, .unknownLeaderEpoch, .unknownTopicId, .throttlingQuotaExceeded,
        ]
        for code in retriable { #expect(code.isRetriable, "\(code)") }
        let fatal: [KafkaErrorCode] = [
            .none, .unknownServerError, .offsetOutOfRange, .unsupportedVersion, .invalidRequest, .topicAlreadyExists,
            .producerFenced, .outOfOrderSequenceNumber, .rebalanceInProgress, .messageTooLarge,
        ]
        for code in fatal { #expect(!code.isRetriable, "\(code)") }
    }
}
