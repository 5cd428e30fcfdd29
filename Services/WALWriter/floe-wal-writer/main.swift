import ArgumentParser
import ClusterMetadata
import ControllerClient
import EventLoopTimers
import FloeService
import KafkaTransport
import Logging
import Metrics
import ObjectStorage
import ServiceLifecycle
import WALWriterCore
import WALWriterService

/// `floe-wal-writer`: one zone's write-ahead log, uploading its contents to object storage.
@main
struct FloeWALWriter: AsyncParsableCommand, EventLoopSizing {
    static let configuration = CommandConfiguration(
        commandName: "floe-wal-writer", abstract: "Floe WAL writer: durable appends on a local volume, uploaded as stream-set objects.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var controllerOptions: ControllerOptions
    @Option(help: "Directory of the WAL volume (FLOE_VOLUME).") var volume: String
    @Option(name: .customLong("object-store"), help: "file:///DIR or s3://… URL; defaults to file://<volume's parent>/objects (FLOE_OBJECT_STORE).")
    var objectStore: String?
    @Option(name: .customLong("upload-interval-ms"), help: "Upload at least this often while data is pending (FLOE_UPLOAD_INTERVAL_MS).")
    var uploadIntervalMs = 250
    @Option(name: .customLong("upload-bytes"), help: "Upload as soon as this many bytes are pending (FLOE_UPLOAD_BYTES).")
    var uploadBytes = 8 << 20
    @Option(name: .customLong("max-buffered-bytes"), help: "Appends wait once this many bytes are not yet uploaded (FLOE_MAX_BUFFERED_BYTES).")
    var maxBufferedBytes = 256 << 20
    @Option(name: .customLong("segment-bytes"), help: "Size of each WAL segment file (FLOE_SEGMENT_BYTES).")
    var segmentBytes = 64 << 20
    @Option(name: .customLong("inline-write-after-idle-ms"), help: "Opt-in: a write of at most 64 KiB that finds the WAL idle this long syncs on the event loop instead of the I/O thread; 0, the default: never (FLOE_INLINE_WRITE_AFTER_IDLE_MS).")
    var inlineWriteAfterIdleMs = 0
    @Option(name: .customLong("direct-writes"), help: "Write appends with O_DIRECT in whole 4 KiB blocks where the volume's file system allows it; false: through the page cache (FLOE_DIRECT_WRITES).")
    var directWrites = true

    @Option(name: .customLong("event-loops"), help: "Event-loop threads; they also run the WAL writer's tasks. One per process measured best on a 2-core host shared by every service (FLOE_EVENT_LOOPS).")
    var eventLoops = 1

    static func main() async { await mainWithEnvironment(tasksOnEventLoops: true) }

    func validate() throws {
        guard (1...256).contains(eventLoops) else { throw ValidationError("--event-loops must be in [1, 256]") }
        guard (1...600_000).contains(uploadIntervalMs) else { throw ValidationError("--upload-interval-ms must be in 1...600000") }
        guard uploadBytes >= 1 else { throw ValidationError("--upload-bytes must be positive") }
        guard maxBufferedBytes >= 1 << 20 else { throw ValidationError("--max-buffered-bytes must be at least 1 MiB") }
        guard (0...60_000).contains(inlineWriteAfterIdleMs) else { throw ValidationError("--inline-write-after-idle-ms must be in [0, 60000]") }
        guard segmentBytes >= 1 << 20 else { throw ValidationError("--segment-bytes must be at least 1 MiB") }
        guard !volume.isEmpty else { throw ValidationError("--volume must not be empty") }
    }

    /// `file://<parent of the volume>/objects`, the store `floe dev` shares between services.
    var defaultObjectStore: String {
        let trimmed = volume.hasSuffix("/") ? String(volume.dropLast()) : volume
        let parent = trimmed.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return "file://\(parent.isEmpty ? "/" : parent)/objects"
    }

    func run() async throws {
        let logger = ServiceRunner.bootstrap(kind: "wal-writer", options: common)
        let endpoints = controllerOptions.controllers.endpoints.map { KafkaEndpoint(host: $0.host, port: $0.port) }
        guard !endpoints.isEmpty else { throw ValidationError("--controllers must name at least one controller") }
        let store = try makeObjectStore(url: objectStore ?? defaultObjectStore, logger: logger)
        let engine = try await WALEngine.open(
            configuration: .init(
                directory: volume, segmentSize: segmentBytes, maxBufferedBytes: maxBufferedBytes,
                inlineWriteAfterIdle: inlineWriteAfterIdleMs == 0 ? nil : .milliseconds(inlineWriteAfterIdleMs),
                directWrites: directWrites),
            logger: logger)
        let controller = ControllerClient(endpoints: endpoints, logger: logger, zone: common.zone)
        let follower = MetadataFollower(client: controller, logger: logger)
        let uploader = WALUploader(engine: engine, store: store, controller: controller, metadata: follower, logger: logger)
        let server = KafkaServer(
            configuration: KafkaServerConfiguration(
                host: common.listen.host, port: common.listen.port, headerVersionResolver: WALRequestHandler.resolver,
                shutdownGracePeriod: .seconds(5)),
            handler: ZoneTrafficCountingHandler(
                WALRequestHandler(engine: engine, uploader: uploader, logger: logger), traffic: ZoneTraffic(zone: common.zone)),
            logger: logger)
        let membership = NodeMembership(
            controller: controller,
            registration: NodeRegistration(
                id: common.nodeID, kind: .walWriter, zone: common.zone,
                listener: common.advertised.description, admin: common.admin.description),
            logger: logger)
        let options = common
        let volume = volume
        let handlers = AdminServer.Handlers(
            ready: { await membership.isRegistered },
            status: {
                let stats = await engine.stats()
                return ServiceStatus(
                    nodeID: options.nodeID, kind: "wal-writer", zone: options.zone, incarnation: await membership.incarnation ?? 0,
                    details: WALWriterStatusDetails(
                        volume: volume, pendingUploadBytes: stats.durableUntrimmedBytes, bufferedBytes: stats.bufferedBytes,
                        lastUploadMillis: await uploader.lastUploadMillis, uploads: await uploader.uploads))
            })
        let lifecycle = WALWriterLifecycle(
            engine: engine, server: server, uploader: uploader, follower: follower, membership: membership,
            uploadInterval: .milliseconds(uploadIntervalMs), uploadBytes: uploadBytes, logger: logger)
        do {
            try await ServiceRunner.run(services: [lifecycle], options: common, handlers: handlers, logger: logger)
        } catch is CancellationError {
            logger.info("WAL writer exited after graceful shutdown")
        }
    }
}

/// The WAL-writer-specific `/status` fields.
struct WALWriterStatusDetails: Encodable, Sendable {
    var volume: String
    var pendingUploadBytes: Int
    var bufferedBytes: Int
    var lastUploadMillis: Int64
    var uploads: Int

    enum CodingKeys: String, CodingKey {
        case volume
        case pendingUploadBytes = "durable_not_uploaded_bytes"
        case bufferedBytes = "buffered_bytes"
        case lastUploadMillis = "last_upload_ms"
        case uploads
    }
}

/// Serves, uploads, heartbeats and exports engine metrics until graceful shutdown; then stops serving,
/// tries one last upload, deregisters and closes the WAL.
struct WALWriterLifecycle: Service {
    let engine: WALEngine
    let server: KafkaServer<ZoneTrafficCountingHandler<WALRequestHandler>>
    let uploader: WALUploader
    let follower: MetadataFollower
    let membership: NodeMembership
    let uploadInterval: Duration
    let uploadBytes: Int
    let logger: Logger

    func run() async throws {
        let engine = engine, server = server, uploader = uploader, follower = follower, membership = membership, logger = logger
        let uploadInterval = uploadInterval, uploadBytes = uploadBytes
        let serving = ServingLifecycle(
            serve: { try await server.run() },
            started: { _ = try await server.boundPort() },
            background: [
                { await follower.run() },
                { await membership.run() },
                { await uploader.run(interval: uploadInterval, thresholdBytes: uploadBytes) },
                { await Self.exportMetrics(engine: engine) },
            ])
        try await serving.run(drain: {
            if let failure = await uploader.flush(timeout: .seconds(5)) {
                // Not lost: the volume keeps it and the next start uploads it.
                logger.warning("final upload did not complete", metadata: ["error": "\(failure)"])
            }
        })
        if !(await membership.deregister(timeout: .seconds(3))) {
            logger.warning("could not deregister; the controller fences this node when its session expires")
        }
        await engine.close()
    }

    /// Publishes the engine's counters and latency quantiles once a second.
    static func exportMetrics(engine: WALEngine) async {
        let appends = Gauge(label: "floe_wal_appends")
        let appendedBytes = Gauge(label: "floe_wal_appended_bytes")
        let syncs = Gauge(label: "floe_wal_fsyncs")
        let fences = Gauge(label: "floe_wal_fences")
        let pending = Gauge(label: "floe_wal_durable_not_uploaded_bytes")
        let buffered = Gauge(label: "floe_wal_buffered_bytes")
        let blocked = Gauge(label: "floe_wal_blocked_appends")
        let appendP99 = Gauge(label: "floe_wal_append_latency_p99_upper_us")
        let syncP50 = Gauge(label: "floe_wal_fsync_latency_p50_upper_us")
        let syncP99 = Gauge(label: "floe_wal_fsync_latency_p99_upper_us")
        while !Task.isCancelled {
            let stats = await engine.stats()
            appends.record(Double(stats.appends))
            appendedBytes.record(Double(stats.appendedBytes))
            syncs.record(Double(stats.syncs))
            fences.record(Double(stats.fences))
            pending.record(Double(stats.durableUntrimmedBytes))
            buffered.record(Double(stats.bufferedBytes))
            blocked.record(Double(stats.blockedAppends))
            appendP99.record(Double(stats.appendLatency.quantileUpperBoundMicros(0.99) ?? -1))
            syncP50.record(Double(stats.syncLatency.quantileUpperBoundMicros(0.5) ?? -1))
            syncP99.record(Double(stats.syncLatency.quantileUpperBoundMicros(0.99) ?? -1))
            do { try await LoopTimers.sleep(for: .seconds(1)) } catch { return }
        }
    }
}
