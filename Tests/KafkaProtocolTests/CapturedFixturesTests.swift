import Foundation
import KafkaProtocol
import KafkaRecords
import NIOCore
import Testing

/// Golden bytes from real clients (Tests/Compatibility/capture_fixtures.py records them): every
/// frame decodes, re-encodes byte for byte, and every produced batch passes its CRC and
/// decompresses to the records the client was asked to send.
@Suite struct CapturedFixturesTests {
    static let root: URL = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/captures")

    /// Clients captured, and the (client id suffix, API) pairs each must have sent.
    static let clients = ["kcat", "confluent", "rdkafka202", "kafkapython", "aiokafka"]
    static let codecs: [CompressionCodec] = [.none, .gzip, .snappy, .lz4, .zstd]

    struct Capture: CustomStringConvertible {
        var client: String
        var file: String
        var bytes: ByteBuffer
        var description: String { "\(client)/\(file)" }
    }

    static func captures() throws -> [Capture] {
        let manager = FileManager.default
        var result: [Capture] = []
        for client in try manager.contentsOfDirectory(atPath: root.path).sorted() {
            let folder = root.appendingPathComponent(client)
            for file in try manager.contentsOfDirectory(atPath: folder.path).sorted() where file.hasSuffix(".bin") {
                let data = try Data(contentsOf: folder.appendingPathComponent(file))
                result.append(Capture(client: client, file: file, bytes: ByteBuffer(bytes: data)))
            }
        }
        return result
    }

    struct Decoded {
        var header: RequestHeader
        var api: ApiKey
        var body: any KafkaRequest
    }

    static func decode(_ capture: Capture) throws -> Decoded {
        var frame = capture.bytes
        let size: Int32 = try frame.readKafkaInteger()
        #expect(Int(size) == frame.readableBytes, "size prefix of \(capture)")
        guard let apiKeyRaw = frame.getInteger(at: frame.readerIndex, as: Int16.self),
              let version = frame.getInteger(at: frame.readerIndex + 2, as: Int16.self),
              let api = ApiKey(rawValue: apiKeyRaw)
        else { throw ProtocolError.invalid("unknown api in \(capture)") }
        let header = try RequestHeader(from: &frame, version: api.requestHeaderVersion(version))
        let body = try api.requestType.init(from: &frame, version: version)
        #expect(frame.readableBytes == 0, "\(capture): \(frame.readableBytes) bytes left after the body")
        return Decoded(header: header, api: api, body: body)
    }

    @Test func everyClientAndScenarioWasCaptured() throws {
        let captures = try Self.captures()
        for client in Self.clients {
            func has(_ scenario: String, _ api: ApiKey) -> Bool {
                captures.contains { $0.client == "\(client)-\(scenario)" && $0.file.contains("-\(api.name)-v") }
            }
            for codec in Self.codecs {
                let scenario = "produce-\(codec == .none ? "none" : "\(codec)")"
                #expect(has(scenario, .apiVersions), "\(client) \(scenario) ApiVersions")
                #expect(has(scenario, .metadata), "\(client) \(scenario) Metadata")
                #expect(has(scenario, .produce), "\(client) \(scenario) Produce")
            }
            #expect(has("consume", .fetch), "\(client) Fetch")
            #expect(has("group", .findCoordinator), "\(client) FindCoordinator")
            #expect(has("group", .joinGroup), "\(client) JoinGroup")
        }
    }

    @Test func everyFrameDecodesAndReencodesByteForByte() throws {
        let captures = try Self.captures()
        #expect(captures.count >= 50)
        for capture in captures {
            let decoded = try Self.decode(capture)
            var reencoded = ByteBuffer()
            reencoded.writeInteger(Int32(0))
            try decoded.header.encode(to: &reencoded, version: decoded.api.requestHeaderVersion(decoded.header.requestApiVersion))
            try decoded.body.encode(to: &reencoded, version: decoded.header.requestApiVersion)
            reencoded.setInteger(Int32(reencoded.readableBytes - 4), at: 0)
            #expect(reencoded == capture.bytes, "\(capture) re-encodes differently")
            #expect(decoded.header.clientId == capture.client)
        }
    }

    struct Expected: Decodable {
        struct Record: Decodable {
            var key: String
            var value: String
            var headers: [[String?]]
            var timestamp: Int64?
        }
        var codec: String
        var records: [Record]
    }

    @Test func producedBatchesPassCRCAndDecompressToTheRecordsSent() throws {
        let produces = try Self.captures().filter { $0.file.contains("-Produce-v") }
        let clients = Set(produces.map(\.client)).sorted()
        #expect(clients.count == Self.clients.count * Self.codecs.count)
        for client in clients {
            let expectedURL = Self.root.appendingPathComponent(client).appendingPathComponent("expected.json")
            let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: expectedURL))
            var records: [(RecordBatch, Record)] = []
            var codecs: [CompressionCodec] = []
            for capture in produces where capture.client == client {
                let produce = try #require(try Self.decode(capture).body as? ProduceRequest)
                for topic in produce.topicData {
                    for partition in topic.partitionData {
                        var iterator = RecordSetIterator(try #require(partition.records))
                        while let batch = try iterator.next() {
                            #expect(batch.verifyCRC(), "\(capture): CRC")
                            codecs.append(batch.codec)
                            for record in try batch.records(maxUncompressedBytes: 1 << 24) {
                                records.append((batch, record))
                            }
                        }
                        #expect(iterator.partialBatch == nil, "\(capture): partial batch in a produce request")
                    }
                }
            }
            // librdkafka sends a batch uncompressed when compressing would not shrink it.
            let wanted = Self.codecs.first { "\($0)" == expected.codec } ?? .none
            #expect(codecs.contains(wanted), "\(client): no \(expected.codec) batch among \(codecs)")
            #expect(codecs.allSatisfy { $0 == wanted || $0 == .none }, "\(client): codecs \(codecs)")
            try #require(records.count == expected.records.count, "\(client): \(records.count) records")
            for ((batch, record), want) in zip(records, expected.records) {
                #expect(record.key.map { String(buffer: $0) } == want.key, "\(client): key")
                #expect(record.value.map { String(buffer: $0) } == want.value, "\(client): value")
                let headers = record.headers.map { [$0.key, $0.value.map { String(buffer: $0) }] }
                #expect(headers == want.headers, "\(client): headers")
                if let timestamp = want.timestamp {
                    #expect(record.timestamp(in: batch.header) == timestamp, "\(client): timestamp")
                }
            }
        }
    }
}
