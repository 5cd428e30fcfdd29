import KafkaProtocol
import Metrics

/// The broker's request-path metrics, created once (after the metrics system is bootstrapped, on
/// first use) rather than looked up in the registry on every request.
enum BrokerMetrics {
    static let produceBytes = Counter(label: "floe_broker_produce_bytes_total")
    static let produceSeconds = Timer(label: "floe_broker_produce_seconds")
    static let fetchBytes = Counter(label: "floe_broker_fetch_bytes_total")
    /// One counter per API key a broker serves (labels stay bounded).
    static let requests: [ApiKey: Counter] = Dictionary(
        uniqueKeysWithValues: brokerAdvertisedVersions.entries.map {
            ($0.apiKey, Counter(label: "floe_broker_requests_total", dimensions: [("api", "\($0.apiKey)")]))
        })
}
