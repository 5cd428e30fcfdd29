import ArgumentParser
import ControllerClient
import ControllerCore
import FloeService
import Logging
import ServiceLifecycle

/// `floe-controller`: one voter of the controller Raft group.
@main
struct FloeController: AsyncParsableCommand, EventLoopSizing {
    static let configuration = CommandConfiguration(
        commandName: "floe-controller", abstract: "Floe controller: Raft-replicated cluster metadata in SQLite.")

    @OptionGroup var common: CommonOptions
    @Option(help: "Static voters: ID@HOST:PORT,… (FLOE_VOTERS).") var voters: String
    @Option(name: .customLong("data-dir"), help: "Directory of the SQLite database (FLOE_DATA_DIR).") var dataDir: String
    @Option(name: .customLong("session-timeout-ms"), help: "Fence a registered node after this many ms without a heartbeat (FLOE_SESSION_TIMEOUT_MS).")
    var sessionTimeoutMs = 2000
    @Option(name: .customLong("session-close-grace-ms"), help: "Fence a node this many ms after the connection of its latest heartbeat closed, unless it heartbeats again (FLOE_SESSION_CLOSE_GRACE_MS).")
    var sessionCloseGraceMs = 1000
    @Option(name: .customLong("election-timeout-ms"), help: "Lower bound of the Raft election timeout in ms; the upper bound is twice it (FLOE_ELECTION_TIMEOUT_MS).")
    var electionTimeoutMs = 1000
    @Option(name: .customLong("event-loops"), help: "Event-loop threads; they also run the controller's tasks (FLOE_EVENT_LOOPS).")
    var eventLoops = 1

    static func main() async { await mainWithEnvironment(tasksOnEventLoops: true) }

    func validate() throws {
        guard (100...600_000).contains(sessionTimeoutMs) else { throw ValidationError("--session-timeout-ms must be in 100...600000") }
        // Nodes heartbeat every 300 ms at most; a grace shorter than a couple of heartbeats would fence live nodes that reconnect.
        guard (600...600_000).contains(sessionCloseGraceMs) else { throw ValidationError("--session-close-grace-ms must be in 600...600000") }
        guard (50...60_000).contains(electionTimeoutMs) else { throw ValidationError("--election-timeout-ms must be in 50...60000") }
        guard (1...256).contains(eventLoops) else { throw ValidationError("--event-loops must be in [1, 256]") }
    }

    func run() async throws {
        let logger = ServiceRunner.bootstrap(kind: "controller", options: common)
        let voterList = try ControllerVoter.parseList(voters)
        guard voterList.contains(where: { $0.id == common.nodeID }) else {
            throw ValidationError("--node-id \(common.nodeID) is not in --voters")
        }
        let configuration = ControllerConfiguration(
            nodeId: common.nodeID, zone: common.zone, voters: voterList,
            listenHost: common.listen.host, listenPort: common.listen.port,
            dataDirectory: dataDir, sessionTimeout: .milliseconds(sessionTimeoutMs), sessionCloseGrace: .milliseconds(sessionCloseGraceMs),
            electionTimeoutMin: .milliseconds(electionTimeoutMs), electionTimeoutMax: .milliseconds(2 * electionTimeoutMs),
            // Frequent heartbeats carry the commit index to followers quickly, so their FetchMetadata answers stay fresh.
            raftHeartbeatInterval: .milliseconds(max(5, electionTimeoutMs / 100)))
        let service = try await ControllerService.start(configuration: configuration, logger: logger)
        let node = service.node
        let options = common
        let handlers = AdminServer.Handlers(
            ready: { await node.currentStatus.leaderId != nil },
            status: {
                let status = await node.currentStatus
                return ServiceStatus(
                    nodeID: options.nodeID, kind: "controller", zone: options.zone, incarnation: 0,
                    details: ControllerStatusDetails(status))
            })
        do {
            try await ServiceRunner.run(services: [ControllerLifecycle(service: service)], options: common, handlers: handlers, logger: logger)
        } catch is CancellationError {
            // A service may end graceful shutdown with CancellationError; the controller itself has stopped
            // cleanly by then, so SIGTERM still exits 0.
            logger.info("controller exited after graceful shutdown")
        }
    }
}

/// The controller-specific `/status` fields.
struct ControllerStatusDetails: Encodable, Sendable {
    var role: String
    var term: UInt64
    var leaderID: Int32
    var commitIndex: UInt64
    var appliedIndex: UInt64
    var lastLogIndex: UInt64

    init(_ status: ControllerSnapshotStatus) {
        role = status.role
        term = status.term
        leaderID = status.leaderId ?? -1
        commitIndex = status.commitIndex
        appliedIndex = status.appliedIndex
        lastLogIndex = status.lastLogIndex
    }

    enum CodingKeys: String, CodingKey {
        case role, term
        case leaderID = "leader_id"
        case commitIndex = "commit_index"
        case appliedIndex = "applied_index"
        case lastLogIndex = "last_log_index"
    }
}

/// Keeps the controller running until graceful shutdown, then hands leadership away, stops serving and flushes.
struct ControllerLifecycle: Service {
    let service: ControllerService

    func run() async throws {
        try? await gracefulShutdown()
        await service.stop(transferLeadership: true)
    }
}
