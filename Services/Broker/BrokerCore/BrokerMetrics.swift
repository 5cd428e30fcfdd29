import KafkaProtocol
import Metrics

/// The broker's request-path metrics, created once (after the metrics system is bootstrapped, on
/// first use) rather than looked up in the registry on every request.
enum BrokerMetrics {
    static let produceBytes = Counter(label: "floe_broker_produce_bytes_total")
    static let produceSeconds = Timer(label: "floe_broker_produce_seconds")
    static let fetchBytes = Counter(label: "floe_broker_fetch_bytes_total")
    /// Bytes appended here from routed objects (produces another zone's broker routed to this leader).
    static let claimedBytes = Counter(label: "floe_broker_claimed_bytes_total")
    /// Fetch requests by kind: `full` (session epoch 0 or -1) or `incremental`.
    static let fetchRequests = FetchKind.metrics { Counter(label: "floe_broker_fetch_requests_total", dimensions: [("kind", $0)]) }
    /// Partitions a Fetch request lists, by kind (an incremental one lists only what changed).
    static let fetchRequestPartitions = FetchKind.metrics { Recorder(label: "floe_broker_fetch_request_partitions", dimensions: [("kind", $0)]) }
    /// Partitions a Fetch answer names, by kind of request (an incremental answer names only what changed).
    static let fetchResponsePartitions = FetchKind.metrics { Recorder(label: "floe_broker_fetch_response_partitions", dimensions: [("kind", $0)]) }
    /// Fetch sessions cached.
    static let fetchSessions = Gauge(label: "floe_broker_fetch_sessions")
    /// Partitions of all cached fetch sessions.
    static let fetchSessionPartitions = Gauge(label: "floe_broker_fetch_session_partitions")
    static let fetchSessionsCreated = Counter(label: "floe_broker_fetch_sessions_created_total")
    /// Sessions evicted to make room for a new one.
    static let fetchSessionEvictions = Counter(label: "floe_broker_fetch_session_evictions_total")
    /// Fetch requests refused for their session (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, FETCH_SESSION_TOPIC_ID_ERROR).
    static let fetchSessionErrors: [KafkaErrorCode: Counter] = Dictionary(
        uniqueKeysWithValues: [KafkaErrorCode.fetchSessionIdNotFound, .invalidFetchSessionEpoch, .fetchSessionTopicIdError].map {
            ($0, Counter(label: "floe_broker_fetch_session_errors_total", dimensions: [("error", $0.name)]))
        })
    /// One counter per API key a broker serves (labels stay bounded).
    static let requests: [ApiKey: Counter] = Dictionary(
        uniqueKeysWithValues: brokerAdvertisedVersions.entries.map {
            ($0.apiKey, Counter(label: "floe_broker_requests_total", dimensions: [("api", "\($0.apiKey)")]))
        })
}

/// The `kind` label of the Fetch metrics.
enum FetchKind: String, CaseIterable {
    case full, incremental

    static func metrics<Metric>(_ make: (String) -> Metric) -> [FetchKind: Metric] {
        Dictionary(uniqueKeysWithValues: allCases.map { ($0, make($0.rawValue)) })
    }
}
