import ClusterMetadata
import ControllerClient
import KafkaProtocol
import KafkaTransport
import Logging
import Metrics
import NIOCore
import Raft
import Synchronization

/// How a proposal ended.
public enum ProposalOutcome: Sendable {
    /// Committed and applied at `index`; `result` is what `MetadataState.apply` returned. For a retried write
    /// whose first attempt was already applied, both are that first attempt's.
    case applied(MetadataResult, index: UInt64)
    /// This node is not (or stopped being) the leader; the leader it knows of, if any.
    case notLeader(leaderId: Int32?)
    /// Not applied within the timeout (it may still commit later).
    case timedOut
}

/// A point-in-time view of a controller for `/status`, readiness and DescribeController.
public struct ControllerSnapshotStatus: Sendable, Hashable {
    /// This controller's node id.
    public var nodeId: Int32
    /// Raft role.
    public var role: String
    /// Current term.
    public var term: UInt64
    /// Known leader, if any.
    public var leaderId: Int32?
    /// Highest committed index.
    public var commitIndex: UInt64
    /// Highest applied index (the metadata version served).
    public var appliedIndex: UInt64
    /// Last index in the log.
    public var lastLogIndex: UInt64
}

/// The Raft driver: owns the `RaftNode`, feeds it ticks, messages and proposals, carries out its actions in
/// order (group-committing storage actions to SQLite), applies committed commands to the metadata state and
/// answers proposers, fetchers and heartbeats. The decisions about sessions, reassignments and waiters are made
/// by state machines (`BrokerSessions`, `ReassignmentMoves`, `MetadataWaiters`) this actor drives with its clock.
public actor ControllerNode {
    /// Who is told when a proposal ends.
    enum ProposalWaiter {
        /// A caller of `propose`.
        case caller(CheckedContinuation<ProposalOutcome, Never>)
        /// A fence or unfence the sessions asked for.
        case session(node: NodeID, token: UInt64, action: String)
        /// A leadership move completing a reassignment.
        case reassignment(PartitionKey)
    }

    struct Proposal {
        var waiter: ProposalWaiter
        var timer: (any ControllerTimer)?
        var index: RaftIndex?
        var term: RaftTerm?
    }

    struct PendingWrite {
        var operation: ControllerStorageOperation
        var sequence: RaftStorageSequence?
        var afterDurable: RaftInput?
    }

    /// Metrics with bounded labels only (no per-node or per-command label values).
    struct Instruments {
        let term = Gauge(label: "floe_controller_raft_term")
        let isLeader = Gauge(label: "floe_controller_is_leader")
        let commitIndex = Gauge(label: "floe_controller_commit_index")
        let appliedIndex = Gauge(label: "floe_controller_applied_index")
        let applied = Counter(label: "floe_controller_applied_entries_total")
        let storageBatch = Recorder(label: "floe_controller_storage_batch_operations")
        let storageWrite = Metrics.Timer(label: "floe_controller_storage_write_seconds")
        let proposals = Counter(label: "floe_controller_proposals_total")
        let fenced = Counter(label: "floe_controller_session_fences_total")
        let closeFenced = Counter(label: "floe_controller_session_close_fences_total")
    }

    let instruments = Instruments()

    /// The configuration this node runs with.
    public nonisolated let configuration: ControllerConfiguration
    /// The clock every deadline and Raft timer is measured on.
    public nonisolated let clock: any ControllerClock
    let logger: Logger
    let storage: ControllerStorage
    var raft: RaftNode
    /// The applied metadata state.
    public internal(set) var metadata: MetadataState
    var appliedIndex: RaftIndex
    var appliedTerm: RaftTerm
    var lastAppliedStateWrite: RaftIndex
    var status: RaftStatus

    var pendingWrites: [PendingWrite] = []
    let flushRequests: AsyncStream<Void>
    let flushRequest: AsyncStream<Void>.Continuation
    /// The one loop that writes pending operations to SQLite, off the actor while the write runs.
    var flusher: Task<Void, Never>?

    private var proposals: [UInt64: Proposal] = [:]
    private var proposalByIndex: [RaftIndex: UInt64] = [:]
    private var nextProposalID: UInt64 = 1

    var sessions: BrokerSessions
    var reassignments = ReassignmentMoves()
    var waiters = MetadataWaiters()
    var waiterContinuations: [UInt64: CheckedContinuation<Void, Never>] = [:]
    /// The one timer armed for `waiters.nextDeadline`, and a generation that tells a stale firing from it.
    var waiterTimer: (deadline: Duration, generation: UInt64, timer: any ControllerTimer)?
    var waiterTimerGeneration: UInt64 = 0

    /// Shared with the peer senders, which run off the actor so network writes never wait behind Raft work.
    private let voterEndpoints: EndpointTable
    private var peerQueues: [RaftNodeID: AsyncStream<RaftMessageRequest>.Continuation] = [:]
    private var peerTasks: [Task<Void, Never>] = []
    private let transport: KafkaClient

    var stopped = false
    var draining = false

    /// Opens the database in the configured data directory and rebuilds the Raft node and metadata state from it;
    /// every deadline is measured on `clock`.
    public init(
        configuration: ControllerConfiguration, logger: Logger, clock: any ControllerClock = ContinuousControllerClock()
    ) async throws {
        self.configuration = configuration
        self.clock = clock
        var logger = logger
        logger[metadataKey: "node.id"] = "\(configuration.nodeId)"
        self.logger = logger
        storage = try await ControllerStorage.open(directory: configuration.dataDirectory)
        let stored = try await storage.load()
        var persistent = stored.raft
        let logLast = persistent.entries.last?.index ?? persistent.snapshot?.metadata.index ?? 0
        var state = MetadataState()
        var applied: RaftIndex = 0
        var appliedTerm: RaftTerm = 0
        if let snapshot = persistent.snapshot {
            state = try MetadataState(snapshot: ByteBuffer(bytes: snapshot.data))
            applied = snapshot.metadata.index
            appliedTerm = snapshot.metadata.term
        }
        // The applied state helps only if the durable log reaches it; otherwise replay from the snapshot.
        if let saved = stored.applied, saved.index > applied, saved.index <= logLast {
            state = try MetadataState(snapshot: ByteBuffer(bytes: saved.data))
            applied = saved.index
            appliedTerm = saved.term
        }
        persistent.appliedIndex = applied
        var raftConfiguration = RaftConfiguration(
            id: UInt64(configuration.nodeId), voters: configuration.voters.map { UInt64($0.id) },
            electionTimeoutMin: configuration.electionTimeoutMin, electionTimeoutMax: configuration.electionTimeoutMax,
            heartbeatInterval: configuration.raftHeartbeatInterval)
        raftConfiguration.snapshotThreshold = configuration.snapshotThreshold
        raftConfiguration.entriesKeptAfterSnapshot = configuration.entriesKeptAfterSnapshot
        var seed = UInt64(configuration.nodeId) &* 0x9E37_79B9_7F4A_7C15
        seed ^= UInt64.random(in: 0...UInt64.max)
        raft = try RaftNode(configuration: raftConfiguration, restoring: persistent, seed: seed, now: Self.raftInstant(clock.now))
        metadata = state
        appliedIndex = applied
        self.appliedTerm = appliedTerm
        lastAppliedStateWrite = applied
        status = raft.status
        sessions = BrokerSessions(sessionTimeout: configuration.sessionTimeout, closeGrace: configuration.sessionCloseGrace)
        (flushRequests, flushRequest) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        voterEndpoints = EndpointTable(Dictionary(uniqueKeysWithValues: configuration.voters.map { ($0.id, $0.endpoint) }))
        transport = KafkaClient(logger: logger)
        logger.info("controller state restored", metadata: [
            "raft.term": "\(raft.term)", "applied.index": "\(applied)", "log.last": "\(raft.lastLogIndex)",
        ])
    }

    // MARK: Lifecycle

    /// Starts the storage flusher and the per-peer senders; call once before feeding ticks and messages.
    public func start() {
        startFlusher()
        for voter in configuration.voters where voter.id != configuration.nodeId {
            let (stream, continuation) = AsyncStream<RaftMessageRequest>.makeStream(bufferingPolicy: .bufferingNewest(4096))
            peerQueues[UInt64(voter.id)] = continuation
            let peer = voter.id
            let endpoints = voterEndpoints
            peerTasks.append(Task.detached { [transport, logger] in
                for await message in stream {
                    guard let endpoint = endpoints.table.withLock({ $0[peer] }) else { continue }
                    do {
                        // Every field of the message is representable at version 0, so encoding cannot fail.
                        try await transport.sendOneway(message, version: 0, to: endpoint, clientId: "floe-controller")
                    } catch {
                        logger.trace("raft send failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
                    }
                }
            })
        }
    }

    /// Queues `envelope` for its peer's sender.
    func send(_ envelope: RaftEnvelope) {
        peerQueues[envelope.to]?.yield(RaftWire.encode(envelope))
    }

    /// The endpoint of voter `id`, as HOST:PORT.
    public func endpointString(of id: Int32?) -> String? {
        guard let id, let endpoint = voterEndpoints.table.withLock({ $0[id] }) else { return nil }
        return "\(endpoint.host):\(endpoint.port)"
    }

    /// Asks Raft to hand leadership to another voter (before a graceful shutdown); returns once this node is no
    /// longer leader or after `timeout`.
    public func transferLeadership(timeout: Duration) async {
        guard status.role == .leader, configuration.voters.count > 1 else { return }
        step(.transferLeadership(to: nil))
        _ = await waitForStatus(timeout: timeout) { $0.role != "leader" }
    }

    /// Answers waiting and future metadata long polls at once, so a graceful stop does not wait out their timeouts.
    public func beginShutdown() {
        draining = true
        sessions.beginDraining()
        resumeWaiters(waiters.wakeFetches())
    }

    /// Stops accepting work, fails waiting proposals, waits for pending writes to become durable and closes the database.
    public func stop() async {
        guard !stopped else { return }
        stopped = true
        for continuation in peerQueues.values { continuation.finish() }
        peerQueues.removeAll()
        for task in peerTasks { task.cancel() }
        peerTasks.removeAll()
        failProposals(leaderId: nil)
        resumeWaiters(waiters.wakeAll())
        // The flusher drains what is pending, then ends with its request stream.
        startFlusher()
        flushRequest.yield()
        flushRequest.finish()
        await flusher?.value
        await transport.closeAll()
        await storage.close()
        logger.info("controller stopped")
    }

    // MARK: Inputs

    /// Raft's view of `now`: nanoseconds since the clock's origin.
    static func raftInstant(_ now: Duration) -> RaftInstant {
        let (seconds, attoseconds) = now.components
        return RaftInstant(nanoseconds: UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, attoseconds / 1_000_000_000)))
    }

    /// Advances Raft's clock; the leader also checks heartbeat sessions and completes reassignments.
    public func tick() {
        guard !stopped else { return }
        step(.tick)
        guard status.role == .leader else { return }
        let now = clock.now
        carryOut(sessions.tick(now: now, nodes: metadata.sortedNodes))
        if !metadata.reassignments.isEmpty {
            carryOut(reassignments.tick(now: now, pending: metadata.pendingReassignments, nodes: metadata.nodes))
        }
    }

    /// How long the ticker may sleep before the next tick: until the Raft node's next timer, the
    /// leader's next session check, or one `tickInterval` while reassignments wait to complete;
    /// never shorter than `minimum` nor longer than `maximum` (which bounds how late a deadline
    /// that moved earlier meanwhile is noticed).
    public func nextTickDelay(minimum: Duration, maximum: Duration) -> Duration {
        let now = clock.now
        let instant = Self.raftInstant(now)
        let timer = raft.nextTimerDeadline
        var delay = timer.nanoseconds <= instant.nanoseconds
            ? Duration.zero : Duration.nanoseconds(Int64(min(timer.nanoseconds - instant.nanoseconds, UInt64(Int64.max))))
        if status.role == .leader {
            delay = min(delay, sessions.nextCheck - now)
            if !metadata.reassignments.isEmpty { delay = minimum }
        }
        return max(minimum, min(maximum, delay))
    }

    /// Hands a message from a peer to Raft.
    public func receive(_ envelope: RaftEnvelope) {
        guard !stopped, envelope.to == UInt64(configuration.nodeId) else { return }
        step(.receive(envelope))
    }

    // MARK: Proposals

    /// Replicates `command`; returns once it is applied, rejected, or `timeout` passed. With a `writeId`, a write
    /// already applied (an earlier attempt whose answer was lost) is not applied again: the outcome is the first
    /// application's result and index.
    public func propose(_ command: MetadataCommand, writeId: WriteID? = nil, timeout: Duration) async -> ProposalOutcome {
        if !stopped, status.role == .leader, let writeId, let earlier = metadata.rememberedWrites[writeId] {
            // Saves a log entry; an attempt still in flight is instead caught when its duplicate entry applies.
            return .applied(earlier.result, index: earlier.index)
        }
        return await withCheckedContinuation { continuation in
            submit(command, writeId: writeId, timeout: timeout, waiter: .caller(continuation))
        }
    }

    /// Hands `command` to Raft; `waiter` hears the outcome exactly once, right away when this node cannot propose.
    func submit(_ command: MetadataCommand, writeId: WriteID? = nil, timeout: Duration, waiter: ProposalWaiter) {
        guard !stopped else { return deliver(.notLeader(leaderId: nil), to: waiter) }
        guard status.role == .leader else { return deliver(.notLeader(leaderId: leaderHint), to: waiter) }
        let id = nextProposalID
        nextProposalID += 1
        let payload = Array(MetadataLogEntry(command, writeId: writeId).encode().readableBytesView)
        instruments.proposals.increment()
        let timer = clock.schedule(after: timeout) { Task { await self.finishProposal(id, .timedOut) } }
        proposals[id] = Proposal(waiter: waiter, timer: timer)
        step(.propose(id: id, payload: payload))
    }

    func proposalAccepted(_ id: UInt64, index: RaftIndex, term: RaftTerm) {
        guard proposals[id] != nil else { return }
        proposals[id]?.index = index
        proposals[id]?.term = term
        proposalByIndex[index] = id
    }

    /// Answers the proposal whose entry was applied at `index` with `result`, if this node proposed it.
    func proposalApplied(index: RaftIndex, term: RaftTerm, _ result: MetadataResult, resultIndex: RaftIndex) {
        guard let id = proposalByIndex.removeValue(forKey: index), let proposal = proposals[id] else { return }
        // Another leader's entry replaced this one at the index: the proposal was lost with the leadership.
        finishProposal(id, proposal.term == term ? .applied(result, index: resultIndex) : .notLeader(leaderId: leaderHint))
    }

    func finishProposal(_ id: UInt64, _ outcome: ProposalOutcome) {
        guard let proposal = proposals.removeValue(forKey: id) else { return }
        if let index = proposal.index { proposalByIndex[index] = nil }
        proposal.timer?.cancel()
        deliver(outcome, to: proposal.waiter)
    }

    func failProposals(leaderId: Int32?) {
        for id in proposals.keys.sorted() { finishProposal(id, .notLeader(leaderId: leaderId)) }
    }

    // MARK: Status

    /// The leader this node knows of, as a node id.
    var leaderHint: Int32? { status.leaderID.map { Int32(truncatingIfNeeded: $0) } }

    /// Role, term, leader and indexes.
    public var currentStatus: ControllerSnapshotStatus {
        // The status action carries the commit index only when role, term or leader change; read it live.
        ControllerSnapshotStatus(
            nodeId: configuration.nodeId, role: status.role.rawValue, term: status.term,
            leaderId: leaderHint, commitIndex: raft.commitIndex,
            appliedIndex: appliedIndex, lastLogIndex: raft.lastLogIndex)
    }

    /// The index the in-memory Raft log starts after (entries up to it are only in the snapshot).
    var logStartForTesting: UInt64 { raft.logStartIndex }
}

/// Voter endpoints behind a lock, shared by the driver and its peer senders.
final class EndpointTable: Sendable {
    let table: Mutex<[Int32: KafkaEndpoint]>

    init(_ endpoints: [Int32: KafkaEndpoint]) {
        table = Mutex(endpoints)
    }
}
