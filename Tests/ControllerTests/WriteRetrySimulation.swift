@testable import ClusterMetadata
import KafkaProtocol
import NIOCore
@testable import Raft
import TestKit

/// Controller writes retried by their clients through leader changes, crashes, partitions and snapshots.
///
/// The cluster is the real `RaftNode` and the real `MetadataState`; around them, each simulated controller does
/// what `ControllerNode` does with a write: a leader that already applied the write id answers from the remembered
/// table, any other leader proposes a `MetadataLogEntry` carrying the id and answers when it applies, a node that is
/// not the leader or loses the leadership answers NOT_CONTROLLER, and a proposal that outlives its timeout answers
/// REQUEST_TIMED_OUT while its entry may still commit. Clients do what `ControllerClient` does: one write id per
/// write, resent on every attempt, to the leader named in the answer or to another node after a timeout. The
/// network drops, delays and duplicates messages in both directions. Every logical write is recognisable from its
/// command alone, so the checks in `WriteRetrySimulation+Checks.swift` find a second application whether or not
/// write ids were sent.
final class WriteRetrySimulation {
    let seed: UInt64
    let parameters: Parameters
    var nodes: [Node]
    var clients: [Client]
    var random: SeededRandom
    private var queue = EventQueue<Event>()
    private(set) var now: UInt64 = 0
    private var blocked: Set<Int> = []
    private(set) var healed = false
    /// Write ids by (client, write); a write keeps its id across attempts.
    private(set) var writeIds: [[WriteID]]
    /// Every applied answer a client received, by (client, write), in arrival order.
    var answers: [[[Answer]]]
    /// The committed log as the nodes applied it, by index (1-based; slot 0 unused).
    var committed: [RaftLogEntry?] = [nil]
    var stats = Stats()
    private var trace: [String] = []

    init(seed: UInt64, parameters: Parameters) throws(SimFailure) {
        self.seed = seed
        self.parameters = parameters
        random = SeededRandom(seed: seed)
        nodes = Array(repeating: Node(), count: parameters.nodeCount)
        clients = Array(repeating: Client(), count: parameters.clients)
        answers = Array(repeating: Array(repeating: [], count: parameters.writesPerClient), count: parameters.clients)
        var ids = SeededRandom(seed: seed &* 7919)
        writeIds = (0..<parameters.clients).map { _ in (0..<parameters.writesPerClient).map { _ in WriteID.random(using: &ids) } }
        for n in nodes.indices {
            try start(n)
            queue.push(UInt64(n) * 1_000_000 + 1, .tick(node: n, incarnation: 0))
        }
        for c in clients.indices {
            clients[c].target = random.below(nodes.count)
            queue.push(random.between(1, 50) * 1_000_000, .send(client: c))
        }
        queue.push(parameters.faultIntervalNanos, .fault)
    }

    var replay: String { "FLOE_WRITE_RETRY_SEED=\(seed) swift test --filter WriteRetrySimulationTests" }

    func record(_ line: @autoclosure () -> String) {
        trace.append("t=\(now / 1_000_000)ms \(line())")
        if trace.count > 80 { trace.removeFirst(trace.count - 60) }
    }

    var traceTail: String { trace.suffix(40).joined(separator: "\n") }

    func fail(_ message: String) -> SimFailure {
        SimFailure(description: "\(message) [seed \(seed), \(parameters.nodeCount) nodes, t=\(now / 1_000_000)ms]")
    }

    /// The command of client `c`'s write `w`; its content names the write (see `logicalWrite(of:)`).
    func command(client c: Int, write w: Int) -> MetadataCommand {
        let key = Int32(c * 1000 + w)
        switch (c + w) % 3 {
        case 0:
            return .registerNode(NodeRegistration(id: key, kind: .walWriter, zone: "z", listener: "127.0.0.1:1", admin: "127.0.0.1:2"))
        case 1:
            return .prepareObject(kind: .streamSet, deadline: Millis(key))
        default:
            var idSource = SeededRandom(seed: UInt64(key) &+ 1)
            return .createTopics([TopicSpec(name: "t\(key)", topicId: KafkaUUID.random(using: &idSource), partitionCount: 1)])
        }
    }

    // MARK: Running

    /// Runs until every client has an answer for every write and every node has applied the whole log.
    func run() throws(SimFailure) {
        var events = 0
        while let (time, event) = queue.pop() {
            now = time
            events += 1
            if events > parameters.maxEvents { throw fail("event budget exhausted") }
            if !healed, now >= parameters.chaosNanos { heal() }
            if healed, now >= parameters.chaosNanos + parameters.livenessBudgetNanos {
                throw fail("liveness: writes unanswered \(parameters.livenessBudgetNanos / 1_000_000_000)s after healing: "
                    + clients.enumerated().map { "client \($0.offset) at write \($0.element.write)" }.joined(separator: ", "))
            }
            try handle(event)
            if healed, isQuiescent { return }
        }
        throw fail("event queue drained")
    }

    private var isQuiescent: Bool {
        guard clients.allSatisfy({ $0.write >= parameters.writesPerClient }) else { return false }
        let live = nodes.compactMap(\.raft)
        guard live.count == nodes.count, let commit = live.map(\.commitIndex).max() else { return false }
        return live.allSatisfy { $0.appliedIndex == commit }
    }

    private func heal() {
        healed = true
        blocked = []
        record("heal: partitions removed, all nodes restarted, network reliable")
        for n in nodes.indices where nodes[n].raft == nil { queue.push(now, .restart(node: n)) }
    }

    private func handle(_ event: Event) throws(SimFailure) {
        switch event {
        case let .deliver(envelope):
            let to = Int(envelope.to - 1), from = Int(envelope.from - 1)
            guard nodes[to].raft != nil, !blocked.contains(from * 16 + to) else { return }
            try step(to, .receive(envelope))
        case let .tick(n, incarnation):
            guard nodes[n].incarnation == incarnation, nodes[n].raft != nil else { return }
            queue.push(now + Parameters.tickNanos, .tick(node: n, incarnation: incarnation))
            try step(n, .tick)
        case let .request(n, request):
            try serve(request, at: n)
        case let .answer(request, answer):
            try receive(answer, for: request)
        case let .send(c):
            send(client: c)
        case let .clientTimeout(c, w, attempt):
            guard clients[c].write == w, clients[c].attempt == attempt else { return }
            stats.timeouts += 1
            clients[c].target = random.below(nodes.count)
            queue.push(now + random.between(1, 10) * 1_000_000, .send(client: c))
        case let .proposalTimeout(n, incarnation, id):
            guard nodes[n].incarnation == incarnation else { return }
            finish(id, at: n, .timedOut)
        case .fault:
            guard !healed else { return }
            try injectFault()
            queue.push(now + parameters.faultIntervalNanos / 2 + random.below(parameters.faultIntervalNanos), .fault)
        case let .restart(n):
            guard nodes[n].raft == nil else { return }
            try start(n)
            queue.push(now + 1 + random.below(Parameters.tickNanos), .tick(node: n, incarnation: nodes[n].incarnation))
        }
    }

    private func injectFault() throws(SimFailure) {
        let roll = random.below(1000)
        let leader = nodes.indices.last { nodes[$0].raft?.role == .leader }
        if roll < parameters.crashPermille {
            // Half the crashes hit the leader, whose answers are the ones most often lost.
            let victim = random.chance(500) ? (leader ?? random.below(nodes.count)) : random.below(nodes.count)
            crash(victim)
        } else if roll < parameters.crashPermille + 250 {
            blocked = []
            let victim = random.chance(500) ? (leader ?? random.below(nodes.count)) : random.below(nodes.count)
            for other in nodes.indices where other != victim {
                blocked.insert(victim * 16 + other)
                blocked.insert(other * 16 + victim)
            }
            record("isolate node \(victim + 1)")
        } else if roll < parameters.crashPermille + 400, let leader {
            record("node \(leader + 1) transfers leadership")
            try step(leader, .transferLeadership(to: nil))
        } else {
            blocked = []
            record("network healed")
        }
    }

    private func start(_ n: Int) throws(SimFailure) {
        let disk = nodes[n].disk
        do {
            nodes[n].raft = try RaftNode(
                configuration: parameters.configuration(id: UInt64(n + 1)),
                restoring: RaftPersistentState(hardState: disk.hardState, snapshot: disk.snapshot, entries: disk.log),
                seed: seed &* 31 &+ UInt64(nodes[n].incarnation), now: RaftInstant(nanoseconds: now))
        } catch {
            throw fail("node \(n + 1) cannot restart from its durable state: \(error)")
        }
        nodes[n].metadata = MetadataState()
        nodes[n].loadedFrom = 0
        if let snapshot = disk.snapshot {
            try load(snapshot, into: n)
            stats.restartsFromSnapshot += 1
        }
        record("start node \(n + 1) (incarnation \(nodes[n].incarnation)) from snapshot \(disk.snapshot?.metadata.index ?? 0)")
    }

    private func load(_ snapshot: RaftSnapshot, into n: Int) throws(SimFailure) {
        do {
            nodes[n].metadata = try MetadataState(snapshot: ByteBuffer(bytes: snapshot.data))
        } catch {
            throw fail("node \(n + 1): snapshot at \(snapshot.metadata.index) does not decode: \(error)")
        }
        nodes[n].loadedFrom = snapshot.metadata.index
    }

    private func crash(_ n: Int) {
        guard nodes[n].raft != nil else { return }
        stats.crashes += 1
        record("crash node \(n + 1) with \(nodes[n].proposals.count) proposals in flight")
        // Proposals in flight die with the process: their clients hear nothing and time out.
        nodes[n] = Node(raft: nil, disk: nodes[n].disk, incarnation: nodes[n].incarnation + 1)
        queue.push(now + random.between(20, 400) * 1_000_000, .restart(node: n))
    }

    // MARK: The network

    private func deliver(_ event: Event, from: Int?, to: Int?) {
        if let from, let to, blocked.contains(from * 16 + to) { return }
        if !healed, random.chance(parameters.dropPermille) { return }
        queue.push(now + 1 + random.below(parameters.maxDelayNanos), event)
        if !healed, random.chance(parameters.duplicatePermille) {
            queue.push(now + 1 + random.below(parameters.maxDelayNanos * 2), event)
        }
    }

    // MARK: Clients

    private func send(client c: Int) {
        guard clients[c].write < parameters.writesPerClient else { return }
        clients[c].attempt += 1
        if clients[c].attempt > 1 { stats.retries += 1 }
        stats.attempts += 1
        let w = clients[c].write
        let request = Request(
            client: c, write: w, attempt: clients[c].attempt,
            writeId: parameters.idempotent ? writeIds[c][w] : nil, command: command(client: c, write: w))
        deliver(.request(node: clients[c].target, request), from: nil, to: nil)
        queue.push(now + parameters.clientTimeoutNanos, .clientTimeout(client: c, write: w, attempt: clients[c].attempt))
    }

    private func receive(_ answer: Answer, for request: Request) throws(SimFailure) {
        let c = request.client
        if case .applied = answer {
            answers[c][request.write].append(answer)
            guard clients[c].write == request.write, clients[c].attempt == request.attempt else {
                stats.lateAnswers += 1
                return
            }
            record("client \(c) write \(request.write) answered at attempt \(request.attempt)")
            clients[c].write += 1
            clients[c].attempt = 0
            queue.push(now + random.between(0, 20) * 1_000_000, .send(client: c))
            return
        }
        guard clients[c].write == request.write, clients[c].attempt == request.attempt else { return }
        if case let .notLeader(hint?) = answer {
            clients[c].target = hint
        } else {
            clients[c].target = random.below(nodes.count)
        }
        queue.push(now + random.between(1, 15) * 1_000_000, .send(client: c))
    }

    // MARK: Controllers

    private func answer(_ request: Request, _ answer: Answer) {
        deliver(.answer(request, answer), from: nil, to: nil)
    }

    /// What `ControllerNode.propose` and `submit` do with a write.
    private func serve(_ request: Request, at n: Int) throws(SimFailure) {
        guard let raft = nodes[n].raft else { return }
        guard raft.role == .leader else {
            return answer(request, .notLeader(hint: raft.leaderID.map { Int($0) - 1 }))
        }
        if let id = request.writeId, let earlier = nodes[n].metadata.rememberedWrites[id] {
            stats.answeredFromMemory += 1
            return answer(request, .applied(earlier.result, index: earlier.index))
        }
        let id = nodes[n].nextProposal
        nodes[n].nextProposal += 1
        nodes[n].proposals[id] = Proposal(request: request)
        queue.push(now + parameters.proposalTimeoutNanos, .proposalTimeout(node: n, incarnation: nodes[n].incarnation, proposal: id))
        let payload = Array(MetadataLogEntry(request.command, writeId: request.writeId).encode().readableBytesView)
        try step(n, .propose(id: id, payload: payload))
    }

    private func finish(_ id: UInt64, at n: Int, _ outcome: Answer) {
        guard let proposal = nodes[n].proposals.removeValue(forKey: id) else { return }
        if let index = proposal.index { nodes[n].proposalByIndex[index] = nil }
        answer(proposal.request, outcome)
    }

    private func step(_ n: Int, _ input: RaftInput) throws(SimFailure) {
        guard let actions = nodes[n].raft?.step(input, now: RaftInstant(nanoseconds: now)) else { return }
        var durableThrough: RaftStorageSequence = 0
        for action in actions {
            if let sequence = try perform(action, at: n) { durableThrough = max(durableThrough, sequence) }
        }
        // Storage here is synchronous: everything written is durable before the node's next input.
        if durableThrough > 0 { try step(n, .persisted(through: durableThrough)) }
    }

    /// Carries out one action; returns the storage sequence it made durable, if any.
    private func perform(_ action: RaftAction, at n: Int) throws(SimFailure) -> RaftStorageSequence? {
        switch action {
        case let .send(envelope):
            let to = Int(envelope.to - 1)
            guard !blocked.contains(n * 16 + to) else { return nil }
            deliver(.deliver(envelope), from: n, to: to)
        case let .persistHardState(state, sequence):
            nodes[n].disk.hardState = state
            return sequence
        case let .appendLog(entries, sequence):
            if let first = entries.first { nodes[n].disk.log.removeAll { $0.index >= first.index } }
            nodes[n].disk.log.append(contentsOf: entries)
            return sequence
        case let .installSnapshot(snapshot, sequence):
            try load(snapshot, into: n)
            stats.snapshotsInstalled += 1
            install(snapshot, at: n)
            return sequence
        case let .compactLog(through):
            nodes[n].disk.log.removeAll { $0.index <= through }
        case let .apply(entries):
            for entry in entries { try apply(entry, at: n) }
        case let .takeSnapshot(through):
            guard nodes[n].metadata.lastAppliedIndex <= through, let term = committed[Int(through)]?.term else {
                throw fail("node \(n + 1) asked to snapshot at \(through) after applying \(nodes[n].metadata.lastAppliedIndex)")
            }
            let data = Array(nodes[n].metadata.encodeSnapshot().readableBytesView)
            let snapshot = RaftSnapshot(metadata: RaftSnapshotMetadata(index: through, term: term), data: data)
            install(snapshot, at: n)
            try step(n, .snapshotCreated(index: through, data: data))
        case let .statusChanged(status):
            if status.role == .leader { stats.leaderChanges += 1 }
            record("node \(n + 1) -> \(status.role) term \(status.term)")
            if status.role != .leader {
                let hint = status.leaderID.map { Int($0) - 1 }
                for id in nodes[n].proposals.keys.sorted() { finish(id, at: n, .notLeader(hint: hint)) }
            }
        case let .proposalAccepted(id, index, term):
            guard nodes[n].proposals[id] != nil else { return nil }
            nodes[n].proposals[id]?.index = index
            nodes[n].proposals[id]?.term = term
            nodes[n].proposalByIndex[index] = id
        case let .proposalRejected(id, rejection):
            switch rejection {
            case let .notLeader(hint): finish(id, at: n, .notLeader(hint: hint.map { Int($0) - 1 }))
            case let .transferringLeadership(to): finish(id, at: n, .notLeader(hint: Int(to) - 1))
            }
        }
        return nil
    }

    private func install(_ snapshot: RaftSnapshot, at n: Int) {
        if let current = nodes[n].disk.snapshot, current.metadata.index >= snapshot.metadata.index { return }
        let keep = nodes[n].disk.log.contains { $0.index == snapshot.metadata.index && $0.term == snapshot.metadata.term }
        nodes[n].disk.snapshot = snapshot
        if keep { nodes[n].disk.log.removeAll { $0.index <= snapshot.metadata.index } } else { nodes[n].disk.log = [] }
    }

    /// What `ControllerNode.apply` does with one committed entry, and the answer to its proposer.
    private func apply(_ entry: RaftLogEntry, at n: Int) throws(SimFailure) {
        try recordCommitted(entry, by: n)
        var result = AppliedWrite(result: .ok, index: entry.index)
        if entry.kind == .command {
            let decoded: MetadataLogEntry
            do {
                decoded = try MetadataLogEntry(decoding: ByteBuffer(bytes: entry.payload))
            } catch {
                throw fail("node \(n + 1): committed entry \(entry.index) does not decode: \(error)")
            }
            if let id = decoded.writeId, let earlier = nodes[n].metadata.rememberedWrites[id], earlier.index <= nodes[n].loadedFrom {
                stats.deduplicatedAfterLoad += 1
            }
            result = nodes[n].metadata.apply(decoded, index: entry.index, term: entry.term)
        }
        guard let id = nodes[n].proposalByIndex.removeValue(forKey: entry.index), let proposal = nodes[n].proposals[id] else { return }
        finish(id, at: n, proposal.term == entry.term ? .applied(result.result, index: result.index) : .notLeader(hint: nil))
    }
}
