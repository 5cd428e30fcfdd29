import ArgumentParser
import ClusterMetadata
import CompactorCore
import ControllerClient
import FloeService
import KafkaTransport
import Logging
import ObjectStorage
import ServiceLifecycle

/// `floe-compactor`: merges small objects into per-partition stream objects, applies retention and
/// deletes what no metadata references.
@main
struct FloeCompactor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floe-compactor",
        abstract: "Floe compactor: stream-set objects into stream objects, retention, key compaction, garbage collection.",
        discussion: """
            --listen is accepted like every service's, for registration; the compactor serves no Kafka API on it. \
            Replicas split the work by their registered node ids; the lowest id also collects garbage.
            """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var controllerOptions: ControllerOptions
    @Option(name: .customLong("object-store"), help: "file:///DIR or s3://… URL of the cluster's object store (FLOE_OBJECT_STORE).")
    var objectStore: String
    @Option(name: .customLong("interval-ms"), help: "Time between compaction passes (FLOE_INTERVAL_MS).")
    var intervalMs = 5000
    @Option(name: .customLong("stream-object-bytes"), help: "Target size of a stream object (FLOE_STREAM_OBJECT_BYTES).")
    var streamObjectBytes = 32 << 20
    @Option(name: .customLong("merge-min-objects"), help: "Merge a run of smaller stream objects of one partition once it has this many (FLOE_MERGE_MIN_OBJECTS).")
    var mergeMinObjects = 4
    @Option(name: .customLong("max-pass-bytes"), help: "Upper bound on the stream-set bytes one pass rewrites (FLOE_MAX_PASS_BYTES).")
    var maxPassBytes = 128 << 20
    @Option(name: .customLong("delete-grace-ms"), help: "Keep objects this long after no metadata references them, for readers of older metadata (FLOE_DELETE_GRACE_MS).")
    var deleteGraceMs = 60_000
    @Option(name: .customLong("prepare-lifetime-ms"), help: "Deadline of a compaction output's prepared id; an abandoned one is garbage after it (FLOE_PREPARE_LIFETIME_MS).")
    var prepareLifetimeMs = 300_000
    @Option(name: .customLong("orphan-scan-interval-ms"), help: "How often the store is listed for objects no metadata references (FLOE_ORPHAN_SCAN_INTERVAL_MS).")
    var orphanScanIntervalMs = 300_000
    @Option(name: .customLong("retention-check-interval-ms"), help: "How often retention is applied, as Kafka's log.retention.check.interval.ms; the first check one interval after start; 0: every pass (FLOE_RETENTION_CHECK_INTERVAL_MS).")
    var retentionCheckIntervalMs = 300_000
    @Option(name: .customLong("default-retention-ms"), help: "retention.ms of topics that do not set it; -1 keeps data forever (FLOE_DEFAULT_RETENTION_MS).")
    var defaultRetentionMs: Int64 = 604_800_000
    @Option(name: .customLong("default-retention-bytes"), help: "retention.bytes of topics that do not set it; -1 means no limit (FLOE_DEFAULT_RETENTION_BYTES).")
    var defaultRetentionBytes: Int64 = -1

    static func main() async { await mainWithEnvironment() }

    func validate() throws {
        guard (10...3_600_000).contains(intervalMs) else { throw ValidationError("--interval-ms must be in 10...3600000") }
        guard (1 << 20...1 << 30).contains(streamObjectBytes) else { throw ValidationError("--stream-object-bytes must be 1 MiB to 1 GiB") }
        guard (2...1000).contains(mergeMinObjects) else { throw ValidationError("--merge-min-objects must be in 2...1000") }
        guard maxPassBytes >= 1 << 20 else { throw ValidationError("--max-pass-bytes must be at least 1 MiB") }
        guard deleteGraceMs >= 0 else { throw ValidationError("--delete-grace-ms must not be negative") }
        guard prepareLifetimeMs >= 1000 else { throw ValidationError("--prepare-lifetime-ms must be at least 1000") }
        guard (0...86_400_000).contains(retentionCheckIntervalMs) else { throw ValidationError("--retention-check-interval-ms must be in 0...86400000") }
        guard orphanScanIntervalMs >= 1000 else { throw ValidationError("--orphan-scan-interval-ms must be at least 1000") }
        guard defaultRetentionMs >= -1, defaultRetentionBytes >= -1 else {
            throw ValidationError("--default-retention-ms and --default-retention-bytes must be -1 or more")
        }
    }

    var settings: CompactorSettings {
        CompactorSettings(
            streamObjectBytes: streamObjectBytes, mergeMinObjects: mergeMinObjects, maxPassBytes: maxPassBytes,
            deleteGraceMillis: Millis(deleteGraceMs), prepareLifetimeMillis: Millis(prepareLifetimeMs),
            orphanScanIntervalMillis: Millis(orphanScanIntervalMs), retentionCheckIntervalMillis: Millis(retentionCheckIntervalMs),
            defaultRetentionMillis: defaultRetentionMs,
            defaultRetentionBytes: defaultRetentionBytes)
    }

    func run() async throws {
        let logger = ServiceRunner.bootstrap(kind: "compactor", options: common)
        let endpoints = controllerOptions.controllers.endpoints.map { KafkaEndpoint(host: $0.host, port: $0.port) }
        guard !endpoints.isEmpty else { throw ValidationError("--controllers must name at least one controller") }
        let store = CountingObjectStore(try makeObjectStore(url: objectStore, logger: logger))
        let controller = ControllerClient(endpoints: endpoints, logger: logger, zone: common.zone)
        let follower = MetadataFollower(client: controller, logger: logger)
        let membership = NodeMembership(
            controller: controller,
            registration: NodeRegistration(
                id: common.nodeID, kind: .compactor, zone: common.zone,
                listener: common.advertised.description, admin: common.admin.description),
            logger: logger)
        let compactor = Compactor(
            nodeId: common.nodeID, settings: settings, metadata: ControllerMetadata(client: controller, follower: follower),
            store: store, now: { wallClockMillis() }, logger: logger)
        let options = common
        let handlers = AdminServer.Handlers(
            ready: { await membership.isRegistered },
            status: {
                let totals = await compactor.totals
                return ServiceStatus(
                    nodeID: options.nodeID, kind: "compactor", zone: options.zone, incarnation: await membership.incarnation ?? 0,
                    details: CompactorStatusDetails(
                        passes: await compactor.passes, lastPassMillis: await compactor.lastPassMillis,
                        splitSources: totals.splitSources, mergedSources: totals.mergedSources, outputs: totals.outputs,
                        trims: totals.trims, cleanings: totals.cleanings, cleanedRecords: totals.cleanedRecords, deletedObjects: totals.deletedObjects, reclaimedBytes: totals.reclaimedBytes))
            })
        let lifecycle = CompactorLifecycle(
            compactor: compactor, follower: follower, membership: membership, interval: .milliseconds(intervalMs), logger: logger)
        do {
            try await ServiceRunner.run(services: [lifecycle], options: common, handlers: handlers, logger: logger)
        } catch is CancellationError {
            logger.info("compactor exited after graceful shutdown")
        }
    }
}

/// The compactor-specific `/status` fields (totals since start).
struct CompactorStatusDetails: Encodable, Sendable {
    var passes: Int
    var lastPassMillis: Int64
    var splitSources: Int
    var mergedSources: Int
    var outputs: Int
    var trims: Int
    var cleanings: Int
    var cleanedRecords: Int
    var deletedObjects: Int
    var reclaimedBytes: Int

    enum CodingKeys: String, CodingKey {
        case passes
        case lastPassMillis = "last_pass_ms"
        case splitSources = "split_sources"
        case mergedSources = "merged_sources"
        case outputs
        case trims
        case cleanings
        case cleanedRecords = "cleaned_records"
        case deletedObjects = "deleted_objects"
        case reclaimedBytes = "reclaimed_bytes"
    }
}

/// Follows the metadata, keeps the registration alive and runs passes until graceful shutdown; a
/// pass cut short by the shutdown leaves at most prepared ids, which expire. Then deregisters.
struct CompactorLifecycle: Service {
    let compactor: Compactor
    let follower: MetadataFollower
    let membership: NodeMembership
    let interval: Duration
    let logger: Logger

    func run() async throws {
        let compactor = compactor, follower = follower, membership = membership, interval = interval
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await follower.run() }
            group.addTask { await membership.run() }
            group.addTask { await compactor.run(interval: interval) }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        if !(await membership.deregister(timeout: .seconds(3))) {
            logger.warning("could not deregister; the controller fences this node when its session expires")
        }
    }
}
