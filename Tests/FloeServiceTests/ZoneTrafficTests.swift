import FloeService
import KafkaProtocol
import KafkaTransport
import NIOCore
import Testing

/// `ClientZone` tags and `ZoneTrafficCountingHandler`'s counts in the process's Prometheus registry.
@Suite struct ZoneTrafficTests {
    @Test func clientIdsDeclareZonesWithATag() {
        #expect(ClientZone.declared(in: "orders,floe_zone=b") == "b")
        #expect(ClientZone.declared(in: "floe_zone=eu-west-1a") == "eu-west-1a")
        #expect(ClientZone.declared(in: "app;floe_zone=c;v2") == "c")
        #expect(ClientZone.declared(in: "app floe_zone=") == nil)
        #expect(ClientZone.declared(in: "rdkafka") == nil)
        #expect(ClientZone.declared(in: nil) == nil)
        #expect(ClientZone.of("rdkafka", fallback: "a") == "a")
        #expect(ClientZone.tagging("rdkafka", zone: "b") == "rdkafka,floe_zone=b")
        #expect(ClientZone.tagging("x,floe_zone=c", zone: "b") == "x,floe_zone=c", "a declared zone is kept")
        #expect(ClientZone.tagging(nil, zone: "b") == "floe_zone=b")
    }

    /// Answers every request with 100 bytes.
    struct Answering: KafkaRequestHandler {
        func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
            .immediate(.respond(body: ByteBuffer(repeating: 1, count: 100), headerVersion: 0))
        }
    }

    static func frame(_ key: ApiKey, clientId: String?, bytes: Int) -> KafkaRequestFrame {
        KafkaRequestFrame(
            apiKey: key.rawValue, apiVersion: 0, correlationId: 7, clientId: clientId, headerVersion: 1,
            body: ByteBuffer(repeating: 2, count: bytes))
    }

    /// The counter's value in the registry's text, 0 when absent.
    static func counted(source: String, destination: String, kind: String) -> Int {
        var text = String(decoding: FloeMetrics.registry.emitToBuffer(), as: UTF8.self)
        text = text.split(separator: "\n").first { $0.hasPrefix("floe_zone_bytes_total{src_zone=\"\(source)\",dst_zone=\"\(destination)\",class=\"\(kind)\"}") }
            .map(String.init) ?? ""
        return Int(text.split(separator: " ").last ?? "0") ?? 0
    }

    @Test func requestsAndAnswersAreCountedBetweenTheClientsZoneAndThisOne() async {
        FloeMetrics.bootstrap()
        // Zone names of their own: other tests of the process count traffic too.
        let handler = ZoneTrafficCountingHandler(Answering(), traffic: ZoneTraffic(zone: "zt-here"))
        let connection = ConnectionInfo(id: 1, remoteAddress: nil)
        let tagged = "producer,floe_zone=zt-there"
        _ = await handler.accept(Self.frame(.produce, clientId: tagged, bytes: 50), connection: connection)
        _ = await handler.accept(Self.frame(.metadata, clientId: "untagged", bytes: 20), connection: connection)
        #expect(Self.counted(source: "zt-there", destination: "zt-here", kind: "data") == 50 + tagged.utf8.count + 12)
        #expect(Self.counted(source: "zt-here", destination: "zt-there", kind: "data") == 100 + 8)
        // Without a tag the client is in this service's zone; Metadata is control traffic.
        #expect(Self.counted(source: "zt-here", destination: "zt-here", kind: "control") == (20 + 8 + 12) + (100 + 8))
        #expect(Self.counted(source: "zt-there", destination: "zt-here", kind: "control") == 0)
    }
}
