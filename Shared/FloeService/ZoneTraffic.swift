import KafkaProtocol
import KafkaTransport
import Metrics
import Synchronization

/// Bytes crossing between zones, counted at the accepting end of every Kafka-framed connection, so the
/// sum over all services counts each byte once: `floe_zone_bytes_total{src_zone, dst_zone, class}`.
///
/// A request's bytes go from the client's zone (``ClientZone``: its client-id tag, else this service's
/// zone) to this service's zone, its response's bytes back. `class` is `data` for the APIs that carry
/// record batches (Produce, Fetch, WALAppend, WALRead) and `control` for everything else (metadata, group
/// calls, routed-produce claims, Raft). Frame sizes are the body plus a fixed allowance for the header.
public final class ZoneTraffic: Sendable {
    public let zone: String
    private let counters = Mutex<[Key: Counter]>([:])

    /// APIs whose bodies are record data.
    public static let dataKeys: Set<Int16> = [
        ApiKey.produce.rawValue, ApiKey.fetch.rawValue, ApiKey.wALAppend.rawValue, ApiKey.wALRead.rawValue,
    ]
    /// Size field, api key/version, correlation id: counted for every frame besides its body and client id.
    static let headerBytes = 12

    struct Key: Hashable {
        var source: String
        var destination: String
        var data: Bool
    }

    public init(zone: String) {
        self.zone = zone
    }

    /// Counts `bytes` sent from `source` to `destination`.
    public func count(_ bytes: Int, from source: String, to destination: String, data: Bool) {
        let key = Key(source: source, destination: destination, data: data)
        let counter = counters.withLock { counters in
            if let existing = counters[key] { return existing }
            let made = Counter(
                label: "floe_zone_bytes_total",
                dimensions: [("src_zone", source), ("dst_zone", destination), ("class", data ? "data" : "control")])
            counters[key] = made
            return made
        }
        counter.increment(by: bytes)
    }
}

/// Wraps a service's request handler and counts every request and response in ``ZoneTraffic``.
public struct ZoneTrafficCountingHandler<Inner: KafkaRequestHandler>: KafkaRequestHandler {
    public let inner: Inner
    public let traffic: ZoneTraffic

    public init(_ inner: Inner, traffic: ZoneTraffic) {
        self.inner = inner
        self.traffic = traffic
    }

    public func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        let (client, data) = account(request)
        return await inner.accept(request, connection: connection).map(responseCounter(client: client, data: data))
    }

    public func acceptOnLoop(_ request: KafkaRequestFrame, connection: ConnectionInfo) -> KafkaPendingResponse? {
        // Counted only when the inner handler takes it here; otherwise `accept` counts it.
        guard let pending = inner.acceptOnLoop(request, connection: connection) else { return nil }
        let (client, data) = account(request)
        return pending.map(responseCounter(client: client, data: data))
    }

    public func connectionClosed(_ connection: ConnectionInfo) async {
        await inner.connectionClosed(connection)
    }

    private func account(_ request: KafkaRequestFrame) -> (client: String, data: Bool) {
        let client = ClientZone.of(request.clientId, fallback: traffic.zone)
        let data = ZoneTraffic.dataKeys.contains(request.apiKey)
        traffic.count(
            request.body.readableBytes + (request.clientId?.utf8.count ?? 0) + ZoneTraffic.headerBytes,
            from: client, to: traffic.zone, data: data)
        return (client, data)
    }

    private func responseCounter(client: String, data: Bool) -> @Sendable (KafkaResponseAction) -> KafkaResponseAction {
        let traffic = traffic
        return { action in
            if case .respond(let body, _) = action {
                traffic.count(body.readableBytes + 8, from: traffic.zone, to: client, data: data)
            }
            return action
        }
    }
}
