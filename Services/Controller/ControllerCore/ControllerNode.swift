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
/// answers proposers, fetchers and heartbeats.
public actor ControllerNode {
    private struct Proposal {
        var continuation: CheckedContinuation<ProposalOutcome, Never>
        var index: RaftIndex?
        var term: RaftTerm?
    }

    private struct PendingWrite {
        var operation: ControllerStorageOperation
        var sequence: RaftStorageSequence?
        var afterDurable: RaftInput?
    }

    /// Metrics with bounded labels only (no per-node or per-command label values).
    private struct Instruments {
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

    private let instruments = Instruments()

    /// The configuration this node runs with.
    public nonisolated let configuration: ControllerConfiguration
    private let logger: Logger
    private let storage: ControllerStorage
    private var raft: RaftNode
    /// The applied metadata state.
    public private(set) var metadata: MetadataState
    private var appliedIndex: RaftIndex
    private var appliedTerm: RaftTerm
    private var lastAppliedStateWrite: RaftIndex
    private let clock = ContinuousClock()
    private let origin: ContinuousClock.Instant
    private var status: RaftStatus

    private var pendingWrites: [PendingWrite] = []
    private var flushing = false
    private var flushIdle: [CheckedContinuation<Void, Never>] = []

    private var proposals: [UInt64: Proposal] = [:]
    private var proposalByIndex: [RaftIndex: UInt64] = [:]
    private var nextProposalID: UInt64 = 1

    private var fetchWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextFetchWaiter: UInt64 = 0

    /// Shared with the peer senders, which run off the actor so network writes never wait behind Raft work.
    private let voterEndpoints: EndpointTable
    private var peerQueues: [RaftNodeID: AsyncStream<ByteBuffer>.Continuation] = [:]
    private var peerTasks: [Task<Void, Never>] = []
    private let transport: KafkaClient

    private var lastHeartbeat: [NodeID: ContinuousClock.Instant] = [:]
    /// The server connection each node's latest heartbeat (or registration) arrived on.
    private var sessionConnection: [NodeID: UInt64] = [:]
    /// Shortened deadlines of nodes whose session connection closed and that have not heartbeated since.
    private var closeDeadline: [NodeID: ContinuousClock.Instant] = [:]
    private var reassignmentProposals: Set<PartitionKey> = []
    private var sessionProposals: Set<NodeID> = []
    private var lastSessionCheck: ContinuousClock.Instant
    private var stopped = false
    private var draining = false
    private var statusWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]

    /// Opens the database in the configured data directory and rebuilds the Raft node and metadata state from it.
    public init(configuration: ControllerConfiguration, logger: Logger) async throws {
        self.configuration = configuration
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
        let origin = ContinuousClock.now
        self.origin = origin
        var seed = UInt64(configuration.nodeId) &* 0x9E37_79B9_7F4A_7C15
        seed ^= UInt64.random(in: 0...UInt64.max)
        raft = try RaftNode(configuration: raftConfiguration, restoring: persistent, seed: seed, now: .zero)
        metadata = state
        appliedIndex = applied
        self.appliedTerm = appliedTerm
        lastAppliedStateWrite = applied
        status = raft.status
        lastSessionCheck = origin
        voterEndpoints = EndpointTable(Dictionary(uniqueKeysWithValues: configuration.voters.map { ($0.id, $0.endpoint) }))
        transport = KafkaClient(logger: logger)
        logger.info("controller state restored", metadata: [
            "raft.term": "\(raft.term)", "applied.index": "\(applied)", "log.last": "\(raft.lastLogIndex)",
        ])
    }

    // MARK: Lifecycle

    /// Starts the per-peer senders; call once before feeding ticks and messages.
    public func start() {
        for voter in configuration.voters where voter.id != configuration.nodeId {
            let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(4096))
            peerQueues[UInt64(voter.id)] = continuation
            let peer = voter.id
            let endpoints = voterEndpoints
            peerTasks.append(Task.detached { [transport, logger] in
                for await body in stream {
                    guard let endpoint = endpoints.table.withLock({ $0[peer] }) else { continue }
                    do {
                        try await transport.sendOneway(
                            to: endpoint, apiKey: ApiKey.raftMessage.rawValue, apiVersion: 0,
                            headerVersion: ApiKey.raftMessage.requestHeaderVersion(0), clientId: "floe-controller", body: body)
                    } catch {
                        logger.trace("raft send failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
                    }
                }
            })
        }
    }

    /// Replaces voter endpoints (used when voters bound port 0 and learn each other's ports afterwards).
    public func setVoterEndpoints(_ endpoints: [Int32: KafkaEndpoint]) {
        voterEndpoints.table.withLock { table in
            for (id, endpoint) in endpoints { table[id] = endpoint }
        }
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
        wakeFetchers()
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
        for waiter in fetchWaiters.values { waiter.resume() }
        fetchWaiters.removeAll()
        for waiter in statusWaiters.values { waiter.resume() }
        statusWaiters.removeAll()
        while flushing || !pendingWrites.isEmpty {
            if !flushing { kickFlush() }
            await withCheckedContinuation { flushIdle.append($0) }
        }
        await transport.closeAll()
        await storage.close()
        logger.info("controller stopped")
    }

    // MARK: Inputs

    private var now: RaftInstant {
        let elapsed = origin.duration(to: clock.now)
        let (seconds, attoseconds) = elapsed.components
        return RaftInstant(nanoseconds: UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, attoseconds / 1_000_000_000)))
    }

    /// Advances Raft's clock; the leader also checks heartbeat sessions.
    public func tick() {
        guard !stopped else { return }
        step(.tick)
        if status.role == .leader {
            let current = clock.now
            if lastSessionCheck.duration(to: current) >= .milliseconds(100) {
                lastSessionCheck = current
                checkSessions(now: current)
            }
            if !metadata.reassignments.isEmpty { completeReassignments() }
        }
    }

    /// How long the ticker may sleep before the next tick: until the Raft node's next timer, the
    /// leader's next session check, or one `tickInterval` while reassignments wait to complete;
    /// never shorter than `minimum` nor longer than `maximum` (which bounds how late a deadline
    /// that moved earlier meanwhile is noticed).
    public func nextTickDelay(minimum: Duration, maximum: Duration) -> Duration {
        let current = clock.now
        let instant = now
        let timer = raft.nextTimerDeadline
        var delay = timer.nanoseconds <= instant.nanoseconds
            ? Duration.zero : Duration.nanoseconds(Int64(min(timer.nanoseconds - instant.nanoseconds, UInt64(Int64.max))))
        if status.role == .leader {
            delay = min(delay, (lastSessionCheck + .milliseconds(100)) - current)
            if !metadata.reassignments.isEmpty { delay = minimum }
        }
        return max(minimum, min(maximum, delay))
    }

    /// Floe keeps one copy of the data, in object storage, so a reassignment needs no copying: as
    /// soon as its target broker is active the leader proposes the leadership move.
    private func completeReassignments() {
        for pending in metadata.pendingReassignments {
            let key = PartitionKey(topic: pending.topic, partition: pending.partition)
            guard !reassignmentProposals.contains(key), metadata.nodes[pending.target]?.state == .active,
                  metadata.nodes[pending.target]?.kind == .broker
            else { continue }
            reassignmentProposals.insert(key)
            Task {
                let outcome = await self.propose(.moveLeader(topic: key.topic, partition: key.partition, to: pending.target), timeout: .seconds(5))
                if case let .applied(result, _) = outcome, result.errorCode == 0 {
                    self.reassignmentProposals.remove(key)
                    return
                }
                self.logger.info("reassignment move not applied; retrying in a second", metadata: ["partition": "\(key.topic)-\(key.partition)", "outcome": "\(outcome)"])
                try? await LoopTimers.sleep(for: .seconds(1))
                self.reassignmentProposals.remove(key)
            }
        }
    }

    /// Hands a message from a peer to Raft.
    public func receive(_ envelope: RaftEnvelope) {
        guard !stopped, envelope.to == UInt64(configuration.nodeId) else { return }
        step(.receive(envelope))
    }

    /// Replicates `command`; returns once it is applied, rejected, or `timeout` passed. With a `writeId`, a write
    /// already applied (an earlier attempt whose answer was lost) is not applied again: the outcome is the first
    /// application's result and index.
    public func propose(_ command: MetadataCommand, writeId: WriteID? = nil, timeout: Duration) async -> ProposalOutcome {
        guard !stopped else { return .notLeader(leaderId: nil) }
        guard status.role == .leader else { return .notLeader(leaderId: status.leaderID.map { Int32(truncatingIfNeeded: $0) }) }
        if let writeId, let earlier = metadata.rememberedWrites[writeId] {
            // Saves a log entry; an attempt still in flight is instead caught when its duplicate entry applies.
            return .applied(earlier.result, index: earlier.index)
        }
        let id = nextProposalID
        nextProposalID += 1
        let payload = Array(MetadataLogEntry(command, writeId: writeId).encode().readableBytesView)
        instruments.proposals.increment()
        let timer = LoopTimers.after(timeout) { Task { await self.finishProposal(id, .timedOut) } }
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<ProposalOutcome, Never>) in
            proposals[id] = Proposal(continuation: continuation)
            step(.propose(id: id, payload: payload))
        }
        timer.cancel()
        return outcome
    }

    private func finishProposal(_ id: UInt64, _ outcome: ProposalOutcome) {
        guard let proposal = proposals.removeValue(forKey: id) else { return }
        if let index = proposal.index { proposalByIndex[index] = nil }
        proposal.continuation.resume(returning: outcome)
    }

    private func failProposals(leaderId: Int32?) {
        for id in Array(proposals.keys) { finishProposal(id, .notLeader(leaderId: leaderId)) }
    }

    // MARK: Carrying out actions

    private func step(_ input: RaftInput) {
        let actions = raft.step(input, now: now)
        execute(actions)
    }

    private func execute(_ actions: [RaftAction]) {
        var wroteStorage = false
        for action in actions {
            switch action {
            case let .send(envelope):
                peerQueues[envelope.to]?.yield(Self.encode(envelope))
            case let .persistHardState(hard, sequence):
                pendingWrites.append(PendingWrite(operation: .hardState(hard), sequence: sequence))
                wroteStorage = true
            case let .appendLog(entries, sequence):
                pendingWrites.append(PendingWrite(operation: .append(entries), sequence: sequence))
                wroteStorage = true
            case let .installSnapshot(snapshot, sequence):
                restore(snapshot)
                pendingWrites.append(PendingWrite(operation: .installSnapshot(snapshot), sequence: sequence))
                wroteStorage = true
            case let .compactLog(through):
                pendingWrites.append(PendingWrite(operation: .compact(through: through)))
                wroteStorage = true
            case let .apply(entries):
                apply(entries)
            case let .takeSnapshot(throughIndex):
                // Entries are applied synchronously in action order, so the state is exactly at `throughIndex`.
                guard throughIndex == appliedIndex else {
                    logger.warning("snapshot requested at \(throughIndex) but applied \(appliedIndex)")
                    continue
                }
                let data = Array(metadata.encodeSnapshot().readableBytesView)
                let snapshot = RaftSnapshot(metadata: RaftSnapshotMetadata(index: appliedIndex, term: appliedTerm), data: data)
                pendingWrites.append(PendingWrite(
                    operation: .saveSnapshot(snapshot), afterDurable: .snapshotCreated(index: appliedIndex, data: data)))
                lastAppliedStateWrite = appliedIndex
                wroteStorage = true
            case let .statusChanged(newStatus):
                statusChanged(newStatus)
            case let .proposalAccepted(id, index, term):
                guard proposals[id] != nil else { continue }
                proposals[id]?.index = index
                proposals[id]?.term = term
                proposalByIndex[index] = id
            case let .proposalRejected(id, rejection):
                switch rejection {
                case let .notLeader(hint): finishProposal(id, .notLeader(leaderId: hint.map { Int32(truncatingIfNeeded: $0) }))
                case let .transferringLeadership(to): finishProposal(id, .notLeader(leaderId: Int32(truncatingIfNeeded: to)))
                }
            }
        }
        if wroteStorage { kickFlush() }
    }

    private static func encode(_ envelope: RaftEnvelope) -> ByteBuffer {
        var body = ByteBuffer()
        // Every field of the message is representable at version 0, so encoding cannot fail.
        try? RaftWire.encode(envelope).encode(to: &body, version: 0)
        return body
    }

    private func restore(_ snapshot: RaftSnapshot) {
        do {
            metadata = try MetadataState(snapshot: ByteBuffer(bytes: snapshot.data))
        } catch {
            // The leader's committed state does not decode: continuing would diverge from the quorum.
            fatalError("controller \(configuration.nodeId): snapshot at \(snapshot.metadata.index) does not decode: \(error)")
        }
        appliedIndex = snapshot.metadata.index
        appliedTerm = snapshot.metadata.term
        lastAppliedStateWrite = appliedIndex
        wakeFetchers()
    }

    private func apply(_ entries: [RaftLogEntry]) {
        for entry in entries {
            var result = MetadataResult.ok
            var resultIndex = entry.index
            if entry.kind == .command {
                do {
                    let decoded = try MetadataLogEntry(decoding: ByteBuffer(bytes: entry.payload))
                    let applied = metadata.apply(decoded, index: entry.index, term: entry.term)
                    result = applied.result
                    resultIndex = applied.index
                } catch {
                    // Only the leader encodes commands, from decoded ones; an undecodable entry is a broken invariant
                    // on every replica alike, so skipping it keeps replicas identical.
                    logger.error("committed entry does not decode", metadata: ["raft.index": "\(entry.index)", "error": "\(error)"])
                    result = .error(MetadataError(MetadataErrorCode.invalidRequest, "command does not decode"))
                }
            }
            appliedIndex = entry.index
            appliedTerm = entry.term
            instruments.applied.increment()
            if let id = proposalByIndex.removeValue(forKey: entry.index), let proposal = proposals[id] {
                if proposal.term == entry.term {
                    finishProposal(id, .applied(result, index: resultIndex))
                } else {
                    finishProposal(id, .notLeader(leaderId: status.leaderID.map { Int32(truncatingIfNeeded: $0) }))
                }
            }
        }
        if appliedIndex >= lastAppliedStateWrite + configuration.appliedStateInterval {
            lastAppliedStateWrite = appliedIndex
            pendingWrites.append(PendingWrite(operation: .appliedState(
                index: appliedIndex, term: appliedTerm, data: Array(metadata.encodeSnapshot().readableBytesView))))
            kickFlush()
        }
        instruments.appliedIndex.record(Double(appliedIndex))
        instruments.commitIndex.record(Double(raft.commitIndex))
        wakeFetchers()
        for waiter in statusWaiters.values { waiter.resume() }
        statusWaiters.removeAll()
    }

    private func statusChanged(_ newStatus: RaftStatus) {
        let wasLeader = status.role == .leader
        status = newStatus
        instruments.term.record(Double(newStatus.term))
        instruments.isLeader.record(newStatus.role == .leader ? 1 : 0)
        logger.info("raft status", metadata: [
            "raft.role": "\(newStatus.role)", "raft.term": "\(newStatus.term)",
            "raft.leader": "\(newStatus.leaderID.map(String.init) ?? "none")",
        ])
        if newStatus.role == .leader, !wasLeader {
            // A new leader has no heartbeat history: everyone starts a fresh session.
            lastHeartbeat.removeAll()
            sessionConnection.removeAll()
            closeDeadline.removeAll()
            sessionProposals.removeAll()
        }
        if wasLeader, newStatus.role != .leader {
            failProposals(leaderId: newStatus.leaderID.map { Int32(truncatingIfNeeded: $0) })
        }
        for waiter in statusWaiters.values { waiter.resume() }
        statusWaiters.removeAll()
    }

    // MARK: Group commit

    private func kickFlush() {
        guard !flushing, !pendingWrites.isEmpty else {
            if !flushing {
                for waiter in flushIdle { waiter.resume() }
                flushIdle.removeAll()
            }
            return
        }
        flushing = true
        let batch = pendingWrites
        pendingWrites.removeAll()
        let storage = storage
        let instruments = instruments
        instruments.storageBatch.record(batch.count)
        Task {
            let started = ContinuousClock.now
            do {
                try await storage.write(batch.map(\.operation))
                instruments.storageWrite.recordNanoseconds(Int64((started.duration(to: .now) / .nanoseconds(1)).rounded()))
            } catch {
                // A write that cannot be made durable must not be acknowledged; Raft cannot continue without it.
                fatalError("controller storage write failed: \(error)")
            }
            self.flushed(batch)
        }
    }

    private func flushed(_ batch: [PendingWrite]) {
        flushing = false
        if !stopped {
            if let last = batch.compactMap(\.sequence).max() { step(.persisted(through: last)) }
            for write in batch { if let input = write.afterDurable { step(input) } }
        }
        kickFlush()
    }

    // MARK: Sessions

    /// Records a heartbeat at the leader; returns an error code (0, NOT_CONTROLLER, STALE_BROKER_EPOCH,
    /// BROKER_ID_NOT_REGISTERED) and whether the node is fenced.
    /// `connection` is the server connection it arrived on: when that closes, the session is cut short.
    public func heartbeat(nodeId: NodeID, incarnation: Int64, connection: UInt64? = nil) -> (errorCode: Int16, fenced: Bool) {
        guard status.role == .leader, !stopped else { return (notControllerErrorCode, false) }
        guard let record = metadata.nodes[nodeId] else { return (MetadataErrorCode.brokerIdNotRegistered, false) }
        guard record.incarnation == incarnation else { return (MetadataErrorCode.staleBrokerEpoch, false) }
        lastHeartbeat[nodeId] = clock.now
        trackSessionConnection(nodeId, connection)
        if record.state == .fenced, !sessionProposals.contains(nodeId) {
            sessionProposals.insert(nodeId)
            Task {
                let outcome = await self.propose(.unfenceNode(id: nodeId, incarnation: incarnation), timeout: .seconds(5))
                self.sessionProposalDone(nodeId, outcome, action: "unfence")
            }
        }
        return (0, record.state == .fenced)
    }

    /// Notes that a node just registered (over `connection`, if known), so its session starts now.
    public func sessionStarted(nodeId: NodeID, connection: UInt64? = nil) {
        lastHeartbeat[nodeId] = clock.now
        trackSessionConnection(nodeId, connection)
    }

    private func trackSessionConnection(_ nodeId: NodeID, _ connection: UInt64?) {
        closeDeadline[nodeId] = nil
        // A heartbeat of unknown origin (in-process callers) must not leave an older connection in charge.
        sessionConnection[nodeId] = connection
    }

    /// A server connection ended. Brokers whose latest heartbeat came over it get `sessionCloseGrace` to heartbeat
    /// again: a killed process's sockets are closed by the kernel, so this spots a dead node long before its
    /// session times out, while a live node reconnects and heartbeats well within the grace.
    public func connectionClosed(_ connection: UInt64) {
        // Only the leader tracks sessions; while draining, connections close because this controller is stopping.
        guard status.role == .leader, !stopped, !draining else { return }
        let deadline = clock.now.advanced(by: configuration.sessionCloseGrace)
        for (nodeId, current) in sessionConnection where current == connection {
            sessionConnection[nodeId] = nil
            // Brokers only. A dead broker's partitions move to live brokers at once; a WAL writer's tail can only
            // move once that writer is back to upload it, so fencing a restarting writer early just sends its
            // streams through a cross-zone hand-off while it replays.
            guard metadata.nodes[nodeId]?.kind == .broker else { continue }
            closeDeadline[nodeId] = min(closeDeadline[nodeId] ?? deadline, deadline)
            logger.debug("session connection closed", metadata: ["session.node": "\(nodeId)", "connection.id": "\(connection)"])
        }
    }

    private func checkSessions(now current: ContinuousClock.Instant) {
        for record in metadata.sortedNodes where record.state == .active && record.kind != .controller {
            guard let seen = lastHeartbeat[record.id] else {
                lastHeartbeat[record.id] = current
                continue
            }
            let timedOut = seen.duration(to: current) > configuration.sessionTimeout
            let closed = !draining && closeDeadline[record.id].map { $0 <= current } == true
            guard timedOut || closed, !sessionProposals.contains(record.id) else { continue }
            sessionProposals.insert(record.id)
            let id = record.id
            let incarnation = record.incarnation
            if timedOut {
                logger.info("fencing node after session timeout", metadata: ["fenced.node": "\(id)"])
            } else {
                logger.info("fencing node: its heartbeat connection closed and it did not heartbeat again within the grace",
                            metadata: ["fenced.node": "\(id)", "grace": "\(configuration.sessionCloseGrace)"])
                instruments.closeFenced.increment()
            }
            instruments.fenced.increment()
            Task {
                let outcome = await self.propose(.fenceNode(id: id, incarnation: incarnation), timeout: .seconds(5))
                self.sessionProposalDone(id, outcome, action: "fence")
            }
        }
    }

    private func sessionProposalDone(_ nodeId: NodeID, _ outcome: ProposalOutcome, action: String) {
        sessionProposals.remove(nodeId)
        if case let .applied(result, _) = outcome, result.errorCode != 0 {
            logger.debug("\(action) rejected", metadata: ["node": "\(nodeId)", "error": "\(result)"])
        }
    }

    // MARK: Metadata fetch

    /// Committed changes after `fromVersion`, waiting up to `maxWait` for one when there are none yet.
    public func fetchMetadata(fromVersion: UInt64, maxWait: Duration, maxEntries: Int) async -> FetchMetadataResponse {
        if appliedIndex <= fromVersion, maxWait > .zero, !stopped, !draining, !Task.isCancelled {
            let id = nextFetchWaiter
            nextFetchWaiter += 1
            let timer = LoopTimers.after(maxWait) { Task { await self.wakeFetcher(id) } }
            // A closed connection cancels its requests: the server reports the close only after they return, and
            // the session of a killed node is cut short only then, so the long poll must not wait out its time.
            await withTaskCancellationHandler {
                await withCheckedContinuation { fetchWaiters[id] = $0 }
            } onCancel: {
                Task { await self.wakeFetcher(id) }
            }
            timer.cancel()
        }
        var response = FetchMetadataResponse()
        response.leaderId = status.leaderID.map { Int32(truncatingIfNeeded: $0) } ?? -1
        response.appliedVersion = Int64(clamping: appliedIndex)
        guard appliedIndex > fromVersion else {
            response.version = Int64(clamping: fromVersion)
            return response
        }
        let limit = UInt64(max(1, min(maxEntries, 10_000)))
        var next = fromVersion + 1
        if raft.entry(at: next) == nil {
            // The log no longer holds what the caller needs: send the whole applied state.
            response.snapshot = metadata.encodeSnapshot()
            response.snapshotVersion = Int64(clamping: appliedIndex)
            response.version = Int64(clamping: appliedIndex)
            return response
        }
        var bytes = 0
        while next <= appliedIndex, next - fromVersion <= limit, bytes < 4 << 20, let entry = raft.entry(at: next) {
            if entry.kind == .command {
                var item = FetchMetadataResponse.MetadataEntry()
                item.index = Int64(clamping: entry.index)
                item.term = Int64(clamping: entry.term)
                item.command = ByteBuffer(bytes: entry.payload)
                response.entries.append(item)
                bytes += entry.payload.count
            }
            next += 1
        }
        response.version = Int64(clamping: next - 1)
        return response
    }

    private func wakeFetcher(_ id: UInt64) {
        fetchWaiters.removeValue(forKey: id)?.resume()
    }

    private func wakeFetchers() {
        guard !fetchWaiters.isEmpty else { return }
        let waiters = fetchWaiters.values
        fetchWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Status

    /// Role, term, leader and indexes.
    public var currentStatus: ControllerSnapshotStatus {
        // The status action carries the commit index only when role, term or leader change; read it live.
        ControllerSnapshotStatus(
            nodeId: configuration.nodeId, role: status.role.rawValue, term: status.term,
            leaderId: status.leaderID.map { Int32(truncatingIfNeeded: $0) }, commitIndex: raft.commitIndex,
            appliedIndex: appliedIndex, lastLogIndex: raft.lastLogIndex)
    }

    /// Metadata long polls waiting for a change.
    var fetchWaitersForTesting: Int { fetchWaiters.count }

    /// The server connection a node's session is bound to, if any.
    func sessionConnectionForTesting(_ nodeId: NodeID) -> UInt64? { sessionConnection[nodeId] }

    /// The index the in-memory Raft log starts after (entries up to it are only in the snapshot).
    var logStartForTesting: UInt64 { raft.logStartIndex }

    /// Waits until `condition` holds for the Raft status or `timeout` passes; returns whether it holds.
    public func waitForStatus(timeout: Duration, _ condition: @Sendable (ControllerSnapshotStatus) -> Bool) async -> Bool {
        let deadline = clock.now.advanced(by: timeout)
        var rounds = 0
        while !condition(currentStatus), clock.now < deadline, !stopped, rounds < 100_000 {
            rounds += 1
            let id = nextFetchWaiter
            nextFetchWaiter += 1
            let timer = LoopTimers.after(deadline - clock.now) { Task { await self.wakeStatusWaiter(id) } }
            await withCheckedContinuation { statusWaiters[id] = $0 }
            timer.cancel()
        }
        return condition(currentStatus)
    }

    private func wakeStatusWaiter(_ id: UInt64) {
        statusWaiters.removeValue(forKey: id)?.resume()
    }
}

/// Voter endpoints behind a lock, shared by the driver and its peer senders.
final class EndpointTable: Sendable {
    let table: Mutex<[Int32: KafkaEndpoint]>

    init(_ endpoints: [Int32: KafkaEndpoint]) {
        table = Mutex(endpoints)
    }
}
