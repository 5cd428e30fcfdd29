import ClusterMetadata
import Metrics
import NIOCore
import ObjectStorage

/// Prometheus metrics of a compactor: what the store holds, how far compaction lags, and what each pass did.
enum CompactorMetrics {
    static func kindName(_ kind: ObjectKind) -> String {
        switch kind {
        case .streamSet: "stream_set"
        case .stream: "stream"
        case .routed: "routed"
        }
    }

    /// Gauges of the objects the metadata knows, by kind and state, and the compaction lag: the age
    /// of the oldest committed stream-set object.
    static func record(_ state: MetadataState, now: Millis) {
        var counts: [ObjectKind: Int] = [:]
        var bytes: [ObjectKind: Int64] = [:]
        var oldestStreamSet: Millis?
        for object in state.objects(in: .committed) {
            counts[object.kind, default: 0] += 1
            bytes[object.kind, default: 0] += object.size
            if object.kind == .streamSet { oldestStreamSet = min(oldestStreamSet ?? object.committedAt, object.committedAt) }
        }
        for kind in ObjectKind.allCases {
            Gauge(label: "floe_compactor_objects", dimensions: [("kind", kindName(kind))]).record(counts[kind] ?? 0)
            Gauge(label: "floe_compactor_object_bytes", dimensions: [("kind", kindName(kind))]).record(bytes[kind] ?? 0)
        }
        Gauge(label: "floe_compactor_destroyed_objects").record(state.objects(in: .destroyed).count)
        Gauge(label: "floe_compactor_prepared_objects").record(state.objects(in: .prepared).count)
        Gauge(label: "floe_compactor_lag_seconds").record(Double(oldestStreamSet.map { max(0, now - $0) } ?? 0) / 1000)
    }

    /// Counters of one pass.
    static func record(_ report: PassReport) {
        Counter(label: "floe_compactor_passes_total").increment()
        Counter(label: "floe_compactor_sources_total", dimensions: [("kind", "stream_set")]).increment(by: report.splitSources)
        Counter(label: "floe_compactor_sources_total", dimensions: [("kind", "stream")]).increment(by: report.mergedSources)
        Counter(label: "floe_compactor_outputs_total").increment(by: report.outputs)
        Counter(label: "floe_compactor_trims_total").increment(by: report.trims)
        Counter(label: "floe_compactor_cleanings_total").increment(by: report.cleanings)
        Counter(label: "floe_compactor_cleaned_records_total").increment(by: report.cleanedRecords)
        Counter(label: "floe_compactor_refused_total").increment(by: report.refused)
        Counter(label: "floe_compactor_deleted_objects_total").increment(by: report.deletedObjects)
        Counter(label: "floe_compactor_reclaimed_bytes_total").increment(by: report.reclaimedBytes)
        Counter(label: "floe_compactor_read_bytes_total").increment(by: report.bytesRead)
        Counter(label: "floe_compactor_written_bytes_total").increment(by: report.bytesWritten)
    }
}

/// An object store that counts its requests by operation (`floe_compactor_store_requests_total{op}`).
public struct CountingObjectStore: ObjectStore {
    let base: any ObjectStore

    public init(_ base: any ObjectStore) { self.base = base }

    func count(_ op: String, _ n: Int = 1) {
        Counter(label: "floe_compactor_store_requests_total", dimensions: [("op", op)]).increment(by: n)
    }

    public var stats: ObjectStoreStats { base.stats }

    public func put(_ key: String, _ data: ByteBuffer) async throws {
        count("put")
        try await base.put(key, data)
    }

    public func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool {
        count("put")
        return try await base.putIfAbsent(key, data)
    }

    public func get(_ key: String) async throws -> ByteBuffer {
        count("get")
        return try await base.get(key)
    }

    public func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
        count("get")
        return try await base.get(key, range: range)
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        count("head")
        return try await base.head(key)
    }

    public func delete(_ key: String) async throws {
        count("delete")
        try await base.delete(key)
    }

    public func delete(_ keys: [String]) async throws {
        count("delete", keys.count)
        try await base.delete(keys)
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        count("list")
        return try await base.list(prefix: prefix)
    }
}

extension Compactor {
    /// Runs passes every `interval` until cancelled; a failed pass is logged and retried at the next.
    public func run(interval: Duration) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let report = try await runPass()
                CompactorMetrics.record(report)
                failures = 0
                if report.didWork {
                    logger.debug("compaction pass", metadata: [
                        "split": "\(report.splitSources)", "merged": "\(report.mergedSources)", "outputs": "\(report.outputs)",
                        "trims": "\(report.trims)", "deleted": "\(report.deletedObjects)",
                    ])
                }
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                Counter(label: "floe_compactor_pass_errors_total").increment()
                logger.warning("compaction pass failed; retrying next interval", metadata: ["error": "\(error)", "failures": "\(failures)"])
            }
            CompactorMetrics.record(await metadata.current(), now: now())
            do { try await Task.sleep(for: interval) } catch { return }
        }
    }
}
