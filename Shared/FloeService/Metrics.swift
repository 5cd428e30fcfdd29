import Metrics
import Prometheus

/// The process's Prometheus registry, installed as the swift-metrics backend on first use.
public enum FloeMetrics {
    /// The registry `/metrics` renders; touching it bootstraps swift-metrics exactly once per process.
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()

    /// Bootstraps swift-metrics (idempotent) and returns the registry.
    @discardableResult
    public static func bootstrap() -> PrometheusCollectorRegistry {
        registry
    }
}
