import ArgumentParser
import BrokerCore
import ClusterMetadata
import ControllerClient
import EventLoopTimers
import FloeService
import Foundation
import KafkaTransport
import Logging
import Metrics
import ObjectStorage
import ServiceLifecycle

/// `floe-broker`: a stateless Kafka broker. Partitions' data goes through the zone's WAL writer into
/// object storage; the broker keeps only caches.
@main
struct FloeBroker: AsyncParsableCommand, EventLoopSizing {
    static let configuration = CommandConfiguration(
        commandName: "floe-broker", abstract: "Floe broker: the Kafka protocol over a WAL writer and object storage.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var controllerOptions: ControllerOptions
    @Option(name: .customLong("object-store"), help: "file:///DIR or s3://BUCKET?endpoint=…&region=… holding committed data (FLOE_OBJECT_STORE).")
    var objectStore: String
    @Option(name: .customLong("cluster-id"), help: "Cluster id shown to clients (FLOE_CLUSTER_ID).")
    var clusterId = "floe-cluster"
    @Option(name: .customLong("num-partitions"), help: "Partitions of auto-created topics and of CreateTopics with -1 (FLOE_NUM_PARTITIONS).")
    var numPartitions: Int32 = 1
    @Option(name: .customLong("auto-create-topics"), help: "Create unknown topics on Metadata requests that allow it: true or false (FLOE_AUTO_CREATE_TOPICS).")
    var autoCreateTopics = true
    @Option(name: .customLong("message-max-bytes"), help: "Largest record batch accepted unless a topic sets max.message.bytes (FLOE_MESSAGE_MAX_BYTES).")
    var messageMaxBytes: Int32 = 1_048_588
    @Option(name: .customLong("log-cache-bytes"), help: "Memory for acknowledged tail batches of led partitions (FLOE_LOG_CACHE_BYTES).")
    var logCacheBytes = 128 << 20
    @Option(name: .customLong("block-cache-bytes"), help: "Memory for object blocks read from object storage (FLOE_BLOCK_CACHE_BYTES).")
    var blockCacheBytes = 96 << 20
    @Flag(name: .customLong("wal-bypass"), help: "Benchmark mode: acknowledge appends only once they are in a committed object, without the WAL (FLOE_WAL_BYPASS).")
    var walBypass = false
    @Option(name: .customLong("max-object-reads"), help: "Object-store GETs in flight at once for reads of committed data (FLOE_MAX_OBJECT_READS).")
    var maxObjectReads = 16
    @Option(name: .customLong("group-initial-rebalance-delay-ms"), help: "How long a new group's first rebalance waits for more members (FLOE_GROUP_INITIAL_REBALANCE_DELAY_MS).")
    var groupInitialRebalanceDelayMs: Int64 = 3_000
    @Option(name: .customLong("group-min-session-timeout-ms"), help: "Smallest session timeout a group member may ask for (FLOE_GROUP_MIN_SESSION_TIMEOUT_MS).")
    var groupMinSessionTimeoutMs: Int32 = 6_000
    @Option(name: .customLong("group-max-session-timeout-ms"), help: "Largest session timeout a group member may ask for (FLOE_GROUP_MAX_SESSION_TIMEOUT_MS).")
    var groupMaxSessionTimeoutMs: Int32 = 1_800_000
    @Option(name: .customLong("group-consumer-session-timeout-ms"), help: "How long a consumer-protocol (group.protocol=consumer) member lives without a heartbeat (FLOE_GROUP_CONSUMER_SESSION_TIMEOUT_MS).")
    var groupConsumerSessionTimeoutMs: Int32 = 45_000
    @Option(name: .customLong("group-consumer-heartbeat-interval-ms"), help: "How often consumer-protocol members are told to heartbeat (FLOE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS).")
    var groupConsumerHeartbeatIntervalMs: Int32 = 5_000
    @Option(name: .customLong("offsets-retention-minutes"), help: "How long committed offsets of groups without members are kept (FLOE_OFFSETS_RETENTION_MINUTES).")
    var offsetsRetentionMinutes: Int64 = 10_080
    @Option(name: .customLong("producer-id-expiration-ms"), help: "How long an idempotent producer may stay silent before its sequence state is forgotten (FLOE_PRODUCER_ID_EXPIRATION_MS).")
    var producerIdExpirationMs: Int64 = 86_400_000
    @Option(name: .customLong("max-incremental-fetch-session-cache-slots"), help: "Kafka's max.incremental.fetch.session.cache.slots: fetch sessions kept (KIP-227); 0 keeps none (FLOE_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS).")
    var maxIncrementalFetchSessionCacheSlots = 1_000
    @Option(name: .customLong("max-incremental-fetch-session-cache-partitions"), help: "Partitions all fetch sessions together may hold; with the slots, what bounds their memory (FLOE_MAX_INCREMENTAL_FETCH_SESSION_CACHE_PARTITIONS).")
    var maxIncrementalFetchSessionCachePartitions = 100_000
    @Option(name: .customLong("min-incremental-fetch-session-eviction-ms"), help: "How long a fetch session must have been idle before any new session may evict it (FLOE_MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS).")
    var minIncrementalFetchSessionEvictionMs: Int64 = 120_000

    @Option(name: .customLong("zone-routing"), help: "Zone routing: on (clients see their zone's brokers; produces for partitions led from other zones go through routed objects; committed data of those is served here) or off, the default until it passes the chaos test (FLOE_ZONE_ROUTING).")
    var zoneRouting: OnOff = .off
    @Option(name: .customLong("routed-linger-ms"), help: "How long produces for other zones are collected into one routed object (FLOE_ROUTED_LINGER_MS).")
    var routedLingerMs: Int64 = 2
    @Option(name: .customLong("routed-object-lifetime-ms"), help: "How long a routed object may stay unclaimed before it is garbage (FLOE_ROUTED_OBJECT_LIFETIME_MS).")
    var routedObjectLifetimeMs: Int64 = 300_000

    @Option(name: .customLong("event-loops"), help: "Event-loop threads; they also run the broker's tasks. One per process measured best on a 2-core host shared by every service (FLOE_EVENT_LOOPS).")
    var eventLoops = 1

    static func main() async { await mainWithEnvironment(tasksOnEventLoops: true) }

    func validate() throws {
        guard (1...256).contains(eventLoops) else { throw ValidationError("--event-loops must be in [1, 256]") }
        guard numPartitions >= 1 else { throw ValidationError("--num-partitions must be at least 1") }
        guard messageMaxBytes >= 1024 else { throw ValidationError("--message-max-bytes must be at least 1024") }
        guard logCacheBytes >= 0 else { throw ValidationError("--log-cache-bytes must not be negative") }
        guard blockCacheBytes >= 0 else { throw ValidationError("--block-cache-bytes must not be negative") }
        guard (1...1024).contains(maxObjectReads) else { throw ValidationError("--max-object-reads must be in [1, 1024]") }
        guard !clusterId.isEmpty else { throw ValidationError("--cluster-id must not be empty") }
        guard groupInitialRebalanceDelayMs >= 0 else { throw ValidationError("--group-initial-rebalance-delay-ms must not be negative") }
        guard groupMinSessionTimeoutMs > 0, groupMinSessionTimeoutMs <= groupMaxSessionTimeoutMs else {
            throw ValidationError("--group-min-session-timeout-ms must be positive and at most --group-max-session-timeout-ms")
        }
        guard groupConsumerHeartbeatIntervalMs > 0, groupConsumerHeartbeatIntervalMs < groupConsumerSessionTimeoutMs else {
            throw ValidationError("--group-consumer-heartbeat-interval-ms must be positive and below --group-consumer-session-timeout-ms")
        }
        guard (1...(1 << 40)).contains(offsetsRetentionMinutes) else { throw ValidationError("--offsets-retention-minutes must be positive") }
        guard producerIdExpirationMs >= 1_000 else { throw ValidationError("--producer-id-expiration-ms must be at least 1000") }
        guard (0...1_000_000).contains(maxIncrementalFetchSessionCacheSlots) else {
            throw ValidationError("--max-incremental-fetch-session-cache-slots must be in [0, 1000000]")
        }
        guard (0...100_000_000).contains(maxIncrementalFetchSessionCachePartitions) else {
            throw ValidationError("--max-incremental-fetch-session-cache-partitions must be in [0, 100000000]")
        }
        guard (0...1_000).contains(routedLingerMs) else { throw ValidationError("--routed-linger-ms must be in [0, 1000]") }
        guard routedObjectLifetimeMs >= 10_000 else { throw ValidationError("--routed-object-lifetime-ms must be at least 10000") }
        guard minIncrementalFetchSessionEvictionMs >= 0 else { throw ValidationError("--min-incremental-fetch-session-eviction-ms must not be negative") }
    }

    func run() async throws {
        let logger = ServiceRunner.bootstrap(kind: "broker", options: common)
        let endpoints = controllerOptions.controllers.endpoints.map { KafkaEndpoint(host: $0.host, port: $0.port) }
        guard !endpoints.isEmpty else { throw ValidationError("--controllers must name at least one controller") }
        let store = try makeObjectStore(url: objectStore, logger: logger)
        let controller = ControllerClient(endpoints: endpoints, logger: logger, zone: common.zone)
        let follower = MetadataFollower(client: controller, logger: logger)
        var settings = BrokerSettings(
            nodeId: common.nodeID, zone: common.zone, advertisedHost: common.advertised.host, advertisedPort: Int32(common.advertised.port),
            clusterId: clusterId, defaultPartitions: numPartitions, autoCreateTopics: autoCreateTopics, messageMaxBytes: messageMaxBytes,
            maxIncrementalFetchSessionCacheSlots: maxIncrementalFetchSessionCacheSlots,
            maxIncrementalFetchSessionCachePartitions: maxIncrementalFetchSessionCachePartitions,
            minIncrementalFetchSessionEvictionMs: minIncrementalFetchSessionEvictionMs)
        settings.zoneRouting = zoneRouting == .on
        settings.routedLingerMs = routedLingerMs
        settings.routedObjectLifetimeMs = routedObjectLifetimeMs
        let wal = WALClient(logger: logger, zone: common.zone)
        let committed = CommittedReader(
            store: store, configuration: CommittedReaderConfiguration(blockCacheBytes: blockCacheBytes, maxConcurrentReads: maxObjectReads),
            logger: logger)
        let now: @Sendable () -> Int64 = { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }
        let replicas = ReplicaManager(
            nodeId: common.nodeID, zone: common.zone, wal: wal, committed: committed, metadata: follower, writer: controller,
            logCacheBytes: logCacheBytes,
            bypass: walBypass ? WALBypassAppender(store: store, writer: controller, metadata: follower, logger: logger) : nil,
            producerIdExpirationMs: producerIdExpirationMs, now: now, logger: logger)
        let membership = NodeMembership(
            controller: controller,
            registration: NodeRegistration(
                id: common.nodeID, kind: .broker, zone: common.zone, listener: common.advertised.description, admin: common.admin.description),
            logger: logger)
        let producerIds = ProducerIdAllocator(nodeId: common.nodeID, writer: controller, incarnation: { await membership.incarnation })
        let admin = AdminHandlers(settings: settings, writer: controller, metadata: follower, now: now, logger: logger)
        let router = settings.zoneRouting
            ? ProduceRouter(settings: settings, store: store, writer: controller, metadata: follower, logger: logger) : nil
        let claims = settings.zoneRouting ? RoutedClaims(store: store, logger: logger) : nil
        if settings.zoneRouting { await replicas.wakeReadersOnEveryImage(true) }
        let context = BrokerContext(
            settings: settings, metadata: follower, writer: controller, replicas: replicas, wal: wal,
            committed: committed, logger: logger,
            autoCreate: { await admin.autoCreate(topics: $0) }, now: now, router: router, claims: claims)
        var groupConfig = GroupConfig()
        groupConfig.initialRebalanceDelayMs = groupInitialRebalanceDelayMs
        groupConfig.minSessionTimeoutMs = groupMinSessionTimeoutMs
        groupConfig.maxSessionTimeoutMs = groupMaxSessionTimeoutMs
        groupConfig.offsetsRetentionMs = offsetsRetentionMinutes * 60_000
        groupConfig.consumerSessionTimeoutMs = groupConsumerSessionTimeoutMs
        groupConfig.consumerHeartbeatIntervalMs = groupConsumerHeartbeatIntervalMs
        let groups = GroupCoordinator(context: context, config: groupConfig)
        let server = KafkaServer(
            configuration: KafkaServerConfiguration(
                host: common.listen.host, port: common.listen.port, headerVersionResolver: BrokerRequestHandler.resolver,
                shutdownGracePeriod: .seconds(5)),
            handler: ZoneTrafficCountingHandler(
                BrokerRequestHandler(context: context, admin: admin, producerIds: producerIds, groups: groups),
                traffic: ZoneTraffic(zone: common.zone)),
            logger: logger)
        let options = common
        let handlers = AdminServer.Handlers(
            ready: {
                let registered = await membership.isRegistered
                let version = await follower.version
                return registered && version > 0
            },
            status: {
                let leadership = await replicas.leadership
                return ServiceStatus(
                    nodeID: options.nodeID, kind: "broker", zone: options.zone, incarnation: await membership.incarnation ?? 0,
                    details: BrokerStatusDetails(
                        metadataVersion: await follower.version, ledPartitions: leadership.led, readyPartitions: leadership.ready,
                        logCacheBytes: await replicas.cachedBytes))
            })
        let lifecycle = BrokerLifecycle(
            server: server, replicas: replicas, follower: follower, membership: membership, wal: wal, committed: committed, groups: groups,
            logger: logger)
        do {
            try await ServiceRunner.run(services: [lifecycle], options: common, handlers: handlers, logger: logger)
        } catch is CancellationError {
            logger.info("broker exited after graceful shutdown")
        }
    }
}

/// `on` or `off`, as flags that take a value spell it.
enum OnOff: String, ExpressibleByArgument, Sendable {
    case on, off
}

/// The broker-specific `/status` fields.
struct BrokerStatusDetails: Encodable, Sendable {
    var metadataVersion: UInt64
    var ledPartitions: Int
    var readyPartitions: Int
    var logCacheBytes: Int

    enum CodingKeys: String, CodingKey {
        case metadataVersion = "metadata_version"
        case ledPartitions = "led_partitions"
        case readyPartitions = "ready_partitions"
        case logCacheBytes = "log_cache_bytes"
    }
}

/// Serves Kafka, follows the metadata (taking over and letting go of partitions as it changes) and
/// heartbeats until graceful shutdown; then stops serving, lets go of its partitions and deregisters,
/// so the controller moves them at once instead of after a session timeout.
struct BrokerLifecycle: Service {
    let server: KafkaServer<ZoneTrafficCountingHandler<BrokerRequestHandler>>
    let replicas: ReplicaManager
    let follower: MetadataFollower
    let membership: NodeMembership
    let wal: WALClient
    let committed: CommittedReader
    let groups: GroupCoordinator
    let logger: Logger

    func run() async throws {
        let server = server, replicas = replicas, follower = follower, membership = membership, committed = committed, groups = groups
        let serving = ServingLifecycle(
            serve: { try await server.run() },
            started: { _ = try await server.boundPort() },
            background: [
                { await Self.exportMetrics(replicas: replicas, committed: committed) },
                { await groups.run() },
                { await follower.run() },
                { await membership.run() },
                {
                    for await _ in await follower.versions() {
                        await replicas.apply(await follower.state)
                    }
                },
            ])
        try await serving.run()
        await replicas.resignAll()
        if !(await membership.deregister(timeout: .seconds(3))) {
            logger.warning("could not deregister; the controller fences this node when its session expires")
        }
        await wal.close()
    }

    /// Publishes the caches' and partitions' state once a second.
    static func exportMetrics(replicas: ReplicaManager, committed: CommittedReader) async {
        let led = Gauge(label: "floe_broker_led_partitions")
        let ready = Gauge(label: "floe_broker_ready_partitions")
        let logCache = Gauge(label: "floe_broker_log_cache_bytes")
        let blockCache = Gauge(label: "floe_broker_block_cache_bytes")
        let blockHits = Gauge(label: "floe_broker_block_cache_hits")
        let blockMisses = Gauge(label: "floe_broker_block_cache_misses")
        let gets = Gauge(label: "floe_broker_object_gets")
        let getFailures = Gauge(label: "floe_broker_object_get_failures")
        let getsInFlight = Gauge(label: "floe_broker_object_gets_in_flight")
        while !Task.isCancelled {
            let leadership = await replicas.leadership
            led.record(Double(leadership.led))
            ready.record(Double(leadership.ready))
            logCache.record(Double(await replicas.cachedBytes))
            let stats = committed.stats
            blockCache.record(Double(stats.bytesCached))
            blockHits.record(Double(stats.blockHits))
            blockMisses.record(Double(stats.blockMisses))
            gets.record(Double(stats.gets))
            getFailures.record(Double(stats.getFailures))
            getsInFlight.record(Double(stats.inFlight))
            do { try await LoopTimers.sleep(for: .seconds(1)) } catch { return }
        }
    }
}
