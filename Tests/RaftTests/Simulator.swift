@testable import Raft
import TestKit

// A little over 400 lines on purpose: one simulated cluster, whose event loop, the actions it carries
// out and the invariants it checks after each of them read best side by side.

/// A deterministic cluster: simulated clock, lossy network with partitions, crashing disks.
final class RaftSimulation {
    enum Event {
        case deliver(RaftEnvelope)
        case tick(node: Int, incarnation: Int)
        case fsync(node: Int, incarnation: Int)
        case appSnapshot(node: Int, incarnation: Int, index: RaftIndex, data: [UInt8])
        case fault
        case restart(node: Int)
        case crash(node: Int, incarnation: Int)
        case propose
        case livenessProbe
    }

    struct SimNode {
        var raft: RaftNode?
        var disk = SimDisk()
        var applied: [RaftLogEntry] = []
        var incarnation = 0
        var lastCommit: RaftIndex = 0
    }

    let seed: UInt64
    let parameters: SimParameters
    private(set) var nodes: [SimNode]
    private var random: SeededRandom
    private var queue = EventQueue<Event>()
    private(set) var now: UInt64 = 0
    private var blocked: Set<Int> = []
    private var healed = false
    private var nextPayload: UInt64 = 1
    /// Every entry any node applied, by index: committed entries must never change.
    private var committed: [RaftLogEntry] = []
    /// The single leader of each term.
    private var leaders: [RaftTerm: RaftNodeID] = [:]
    private var trace: [String] = []
    private var traceNext = 0
    private var eventsProcessed = 0
    private var marker: [UInt8]?
    private var markerProposedAt: UInt64 = 0
    private(set) var stats = (elections: 0, proposalsAccepted: 0, snapshotsInstalled: 0, crashes: 0, applied: 0)

    init(seed: UInt64, parameters: SimParameters) throws(SimFailure) {
        self.seed = seed
        self.parameters = parameters
        random = SeededRandom(seed: seed)
        nodes = Array(repeating: SimNode(), count: parameters.nodeCount)
        for n in nodes.indices { try start(n) }
        for n in nodes.indices {
            queue.push(UInt64(n) * 1_000_000 + 1, .tick(node: n, incarnation: 0))
        }
        queue.push(parameters.faultIntervalNanos, .fault)
        queue.push(parameters.proposalIntervalNanos, .propose)
    }

    var commandLine: String {
        "FLOE_RAFT_SEED=\(seed) swift test --filter RaftTests"
    }

    var traceTail: String {
        let ordered = trace.count < 60 ? trace : Array(trace[traceNext...] + trace[..<traceNext])
        return ordered.joined(separator: "\n")
    }

    private func record(_ line: @autoclosure () -> String) {
        let text = "t=\(now / 1_000_000)ms \(line())"
        if trace.count < 60 { trace.append(text) } else { trace[traceNext] = text; traceNext = (traceNext + 1) % 60 }
    }

    private func fail(_ message: String) -> SimFailure {
        SimFailure(description: "\(message) [seed \(seed), \(parameters.nodeCount) nodes, t=\(now / 1_000_000)ms]\n\(nodeSummary)")
    }

    var nodeSummary: String {
        nodes.indices.map { n in
            guard let raft = nodes[n].raft else { return "  node \(n + 1): down" }
            return "  node \(n + 1): \(raft.role) term \(raft.term) leader \(raft.leaderID.map(String.init) ?? "-") log \(raft.logStartIndex)..\(raft.lastLogIndex) commit \(raft.commitIndex) applied \(nodes[n].applied.count) durable \(raft.durableIndex)"
        }.joined(separator: "\n")
    }

    // MARK: Running

    /// Runs the chaos phase, then heals everything and checks that the cluster commits again.
    func run() throws(SimFailure) {
        while let (time, event) = queue.pop() {
            now = time
            eventsProcessed += 1
            if eventsProcessed > parameters.maxEvents { throw fail("event budget exhausted") }
            if !healed, now >= parameters.chaosNanos { heal() }
            if healed, now >= parameters.chaosNanos + parameters.livenessBudgetNanos {
                throw fail("liveness: no commit of a new proposal on all nodes within \(parameters.livenessBudgetNanos / 1_000_000_000)s after healing")
            }
            try handle(event)
            if eventsProcessed % 256 == 0 { try checkLogMatching() }
            if healed, let marker, nodes.allSatisfy({ node in node.applied.contains { $0.payload == marker } }) {
                try checkLogMatching()
                return
            }
        }
        throw fail("event queue drained")
    }

    private func heal() {
        healed = true
        blocked = []
        record("heal: partitions removed, all nodes restarted, network reliable")
        for n in nodes.indices where nodes[n].raft == nil { queue.push(now, .restart(node: n)) }
        queue.push(now, .livenessProbe)
    }

    private func handle(_ event: Event) throws(SimFailure) {
        switch event {
        case let .deliver(envelope):
            let to = Int(envelope.to - 1), from = Int(envelope.from - 1)
            guard nodes[to].raft != nil, !blocked.contains(from * 16 + to) else { return }
            record("deliver \(envelope.from)->\(envelope.to) \(describe(envelope.message))")
            try step(to, .receive(envelope))
        case let .tick(n, incarnation):
            guard nodes[n].incarnation == incarnation, nodes[n].raft != nil else { return }
            queue.push(now + SimParameters.tickNanos, .tick(node: n, incarnation: incarnation))
            try step(n, .tick)
        case let .fsync(n, incarnation):
            guard nodes[n].incarnation == incarnation, nodes[n].raft != nil else { return }
            nodes[n].disk.fsyncScheduled = false
            let through = nodes[n].disk.flush()
            if through > 0 { try step(n, .persisted(through: through)) }
        case let .appSnapshot(n, incarnation, index, data):
            guard nodes[n].incarnation == incarnation, nodes[n].raft != nil else { return }
            let term = nodes[n].applied[Int(index) - 1].term
            nodes[n].disk.installSnapshot(RaftSnapshot(metadata: RaftSnapshotMetadata(index: index, term: term), data: data))
            record("node \(n + 1) snapshot at \(index)")
            try step(n, .snapshotCreated(index: index, data: data))
        case .fault:
            if !healed {
                try injectFault()
                queue.push(now + parameters.faultIntervalNanos / 2 + random.below(parameters.faultIntervalNanos), .fault)
            }
        case let .crash(n, incarnation):
            if !healed, nodes[n].incarnation == incarnation { crash(n) }
        case let .restart(n):
            guard nodes[n].raft == nil else { return }
            try start(n)
            record("restart node \(n + 1) term \(nodes[n].raft?.term ?? 0) log \(nodes[n].raft?.lastLogIndex ?? 0)")
            queue.push(now + 1 + random.below(SimParameters.tickNanos), .tick(node: n, incarnation: nodes[n].incarnation))
        case .propose:
            if !healed {
                try proposeRandom()
                queue.push(now + 1 + random.below(parameters.proposalIntervalNanos * 2), .propose)
            }
        case .livenessProbe:
            try livenessProbe()
            queue.push(now + 50_000_000, .livenessProbe)
        }
    }

    private func start(_ n: Int) throws(SimFailure) {
        let disk = nodes[n].disk
        let state = RaftPersistentState(hardState: disk.hardState, snapshot: disk.snapshot, entries: disk.log)
        do {
            nodes[n].raft = try RaftNode(
                configuration: parameters.configuration(id: UInt64(n + 1)), restoring: state,
                seed: seed &* 31 &+ UInt64(nodes[n].incarnation), now: RaftInstant(nanoseconds: now))
        } catch {
            throw fail("node \(n + 1) cannot restart from its durable state: \(error)")
        }
        nodes[n].applied = try disk.snapshot.map { snap throws(SimFailure) in try SimStateMachine.decode(snap.data) } ?? []
        try checkAgainstCommitted(nodes[n].applied[...], node: n, what: "restored snapshot")
        nodes[n].lastCommit = nodes[n].raft?.commitIndex ?? 0
    }

    private func crash(_ n: Int) {
        guard nodes[n].raft != nil else { return }
        record("crash node \(n + 1), losing \(nodes[n].disk.pending.count) unflushed writes")
        stats.crashes += 1
        nodes[n].raft = nil
        nodes[n].incarnation += 1
        nodes[n].disk.pending = []
        nodes[n].disk.fsyncScheduled = false
        nodes[n].applied = []
        queue.push(now + random.between(20, 600) * 1_000_000, .restart(node: n))
    }

    /// A random node, or with probability one half the current leader, whose loss hurts the most.
    private func pickVictim() -> Int {
        if random.chance(500), let leader = nodes.indices.last(where: { nodes[$0].raft?.role == .leader }) { return leader }
        return Int(random.below(UInt64(nodes.count)))
    }

    private func injectFault() throws(SimFailure) {
        let count = nodes.count
        let roll = random.below(1000)
        if roll < parameters.crashPermille {
            crash(pickVictim())
        } else if roll < parameters.crashPermille + 300, count > 1 {
            blocked = []
            let victim = pickVictim()
            let oneWay = random.chance(400)
            let inbound = random.chance(500)
            for other in 0..<count where other != victim {
                if !oneWay || !inbound { blocked.insert(victim * 16 + other) }
                if !oneWay || inbound { blocked.insert(other * 16 + victim) }
            }
            record("partition node \(victim + 1) \(oneWay ? (inbound ? "inbound-only cut" : "outbound-only cut") : "isolated")")
        } else if roll < parameters.crashPermille + 450, count > 1 {
            let a = Int(random.below(UInt64(count))), b = Int(random.below(UInt64(count)))
            if a != b {
                blocked.insert(a * 16 + b)
                blocked.insert(b * 16 + a)
                record("cut link \(a + 1)<->\(b + 1)")
            }
        } else if roll < parameters.crashPermille + 530, count > 1,
                  let leader = nodes.indices.last(where: { nodes[$0].raft?.role == .leader }) {
            let target = random.chance(300) ? nil : RaftNodeID(random.below(UInt64(count)) + 1)
            record("node \(leader + 1) asked to transfer leadership to \(target.map(String.init) ?? "best")")
            try step(leader, .transferLeadership(to: target))
        } else {
            blocked = []
            record("network healed")
        }
    }

    private func proposeRandom() throws(SimFailure) {
        let live = nodes.indices.filter { nodes[$0].raft != nil }
        guard !live.isEmpty else { return }
        let leader = live.last { nodes[$0].raft?.role == .leader }
        let target = leader != nil && random.chance(900) ? leader! : live[Int(random.below(UInt64(live.count)))]
        let payload = withUnsafeBytes(of: nextPayload.bigEndian) { Array($0) }
        nextPayload += 1
        try step(target, .propose(id: nextPayload, payload: payload))
    }

    private func livenessProbe() throws(SimFailure) {
        let live = nodes.indices.filter { nodes[$0].raft != nil }
        guard let leader = live.last(where: { nodes[$0].raft?.role == .leader }) else { return }
        // Re-propose if the previous attempt went to a leader that was replaced before committing it.
        if marker == nil || now >= markerProposedAt + 2_000_000_000 {
            let payload: [UInt8] = [0xFF] + withUnsafeBytes(of: nextPayload.bigEndian) { Array($0) }
            nextPayload += 1
            marker = payload
            markerProposedAt = now
            record("liveness proposal to node \(leader + 1)")
            try step(leader, .propose(id: 0, payload: payload))
        }
    }

    // MARK: Stepping a node and carrying out its actions

    private func step(_ n: Int, _ input: RaftInput) throws(SimFailure) {
        guard let actions = nodes[n].raft?.step(input, now: RaftInstant(nanoseconds: now)) else { return }
        for action in actions { try perform(action, node: n) }
        try checkNode(n)
    }

    private func perform(_ action: RaftAction, node n: Int) throws(SimFailure) {
        switch action {
        case let .send(envelope):
            try checkDurableBeforeSend(envelope, node: n)
            let from = n, to = Int(envelope.to - 1)
            guard !blocked.contains(from * 16 + to) else { return }
            if !healed, random.chance(parameters.dropPermille) { return }
            queue.push(now + 1 + random.below(parameters.maxDelayNanos), .deliver(envelope))
            if !healed, random.chance(parameters.duplicatePermille) {
                queue.push(now + 1 + random.below(parameters.maxDelayNanos * 2), .deliver(envelope))
            }
        case let .persistHardState(state, sequence):
            schedule(.hardState(state), sequence: sequence, node: n)
        case let .appendLog(entries, sequence):
            schedule(.append(entries), sequence: sequence, node: n)
        case let .installSnapshot(snap, sequence):
            let entries = try SimStateMachine.decode(snap.data)
            guard entries.count == Int(snap.metadata.index) else { throw fail("snapshot at \(snap.metadata.index) holds \(entries.count) entries") }
            try checkAgainstCommitted(entries[...], node: n, what: "installed snapshot")
            nodes[n].applied = entries
            stats.snapshotsInstalled += 1
            record("node \(n + 1) installs snapshot at \(snap.metadata.index)")
            schedule(.install(snap), sequence: sequence, node: n)
        case let .compactLog(through):
            schedule(.compact(through), sequence: 0, node: n)
        case let .apply(entries):
            for entry in entries {
                guard entry.index == RaftIndex(nodes[n].applied.count + 1) else {
                    throw fail("node \(n + 1) applied \(entry.index) after \(nodes[n].applied.count)")
                }
                nodes[n].applied.append(entry)
            }
            stats.applied += entries.count
            try checkAgainstCommitted(entries[...], node: n, what: "apply")
            if nodes[n].raft?.role == .leader, let last = entries.last {
                try checkCommitIsDurableOnQuorum(last)
                // Leaders dying right after committing, before followers learn of it, stress leader completeness.
                if !healed, random.chance(parameters.leaderCrashAfterCommitPermille) {
                    queue.push(now + random.below(2_000_000), .crash(node: n, incarnation: nodes[n].incarnation))
                }
            }
        case let .takeSnapshot(through):
            guard Int(through) == nodes[n].applied.count else { throw fail("snapshot requested at \(through) with \(nodes[n].applied.count) applied") }
            let data = SimStateMachine.encode(nodes[n].applied[...])
            queue.push(now + random.below(3_000_000), .appSnapshot(node: n, incarnation: nodes[n].incarnation, index: through, data: data))
        case let .statusChanged(status):
            record("node \(n + 1) -> \(status.role) term \(status.term) leader \(status.leaderID.map(String.init) ?? "-")")
            if status.role == .leader { try checkNewLeader(n, term: status.term) }
        case let .proposalAccepted(_, index, term):
            stats.proposalsAccepted += 1
            record("node \(n + 1) accepted proposal at \(index) term \(term)")
        case .proposalRejected:
            break
        }
    }

    private func schedule(_ operation: SimDisk.Operation, sequence: RaftStorageSequence, node n: Int) {
        nodes[n].disk.pending.append((sequence, operation))
        if !nodes[n].disk.fsyncScheduled {
            nodes[n].disk.fsyncScheduled = true
            queue.push(now + 100_000 + random.below(parameters.maxFsyncNanos), .fsync(node: n, incarnation: nodes[n].incarnation))
        }
    }

    private func describe(_ message: RaftMessage) -> String {
        switch message {
        case let .vote(m): "\(m.isPreVote ? "PreVote" : "Vote")(t\(m.term) last \(m.lastLogIndex)/t\(m.lastLogTerm)\(m.isLeadershipTransfer ? " transfer" : ""))"
        case let .voteResponse(m): "\(m.isPreVote ? "PreVote" : "Vote")Resp(t\(m.term) \(m.granted ? "granted" : "rejected"))"
        case let .append(m): "Append(t\(m.term) prev \(m.prevLogIndex)/t\(m.prevLogTerm) n=\(m.entries.count) commit \(m.leaderCommit))"
        case let .appendResponse(m): m.success ? "AppendResp(t\(m.term) ok match \(m.matchIndex))" : "AppendResp(t\(m.term) reject at \(m.rejectedIndex) conflict t\(m.conflictTerm.map(String.init) ?? "-")@\(m.conflictIndex))"
        case let .snapshot(m): "Snapshot(t\(m.term) @\(m.metadata.index) off \(m.offset) len \(m.data.count)\(m.done ? " done" : ""))"
        case let .snapshotResponse(m): "SnapshotResp(t\(m.term) @\(m.metadata.index) next \(m.nextOffset)\(m.installed ? " installed match \(m.matchIndex)" : ""))"
        case let .timeoutNow(term): "TimeoutNow(t\(term))"
        }
    }

    // MARK: Invariants

    private func checkAgainstCommitted(_ entries: ArraySlice<RaftLogEntry>, node n: Int, what: String) throws(SimFailure) {
        for entry in entries {
            let k = Int(entry.index) - 1
            if k < committed.count {
                let known = committed[k]
                guard known.term == entry.term, known.payload == entry.payload, known.kind == entry.kind else {
                    throw fail("state machine safety: node \(n + 1) \(what) index \(entry.index) term \(entry.term), but term \(known.term) was committed there")
                }
            } else if k == committed.count {
                committed.append(entry)
            } else {
                throw fail("node \(n + 1) \(what) index \(entry.index) beyond committed prefix \(committed.count)")
            }
        }
    }

    private func checkDurableBeforeSend(_ envelope: RaftEnvelope, node n: Int) throws(SimFailure) {
        let disk = nodes[n].disk
        switch envelope.message {
        case let .voteResponse(response) where response.granted && !response.isPreVote:
            // A later durable term supersedes the vote, which was persisted first (writes are ordered).
            guard disk.hardState.term > response.term || (disk.hardState.term == response.term && disk.hardState.votedFor == envelope.to) else {
                throw fail("node \(n + 1) granted a vote in term \(response.term) before persisting it")
            }
        case let .appendResponse(response) where response.success && response.matchIndex > 0:
            guard let term = nodes[n].raft?.term(at: response.matchIndex), disk.has(index: response.matchIndex, term: term) else {
                throw fail("node \(n + 1) acknowledged index \(response.matchIndex) before it was durable")
            }
        case .vote(let request) where !request.isPreVote:
            guard disk.hardState.term > request.term || (disk.hardState.term == request.term && disk.hardState.votedFor == UInt64(n + 1)) else {
                throw fail("node \(n + 1) requested votes for term \(request.term) before persisting its own vote")
            }
        default:
            break
        }
    }

    private func checkCommitIsDurableOnQuorum(_ entry: RaftLogEntry) throws(SimFailure) {
        let holders = nodes.filter { $0.disk.has(index: entry.index, term: entry.term) }.count
        guard holders >= parameters.nodeCount / 2 + 1 else {
            throw fail("entry \(entry.index) term \(entry.term) committed while durable on only \(holders) nodes")
        }
    }

    private func checkNewLeader(_ n: Int, term: RaftTerm) throws(SimFailure) {
        stats.elections += 1
        let id = UInt64(n + 1)
        if let existing = leaders[term], existing != id {
            throw fail("election safety: nodes \(existing) and \(id) both leaders in term \(term)")
        }
        leaders[term] = id
        guard let raft = nodes[n].raft else { return }
        // Leader completeness: every committed entry past its snapshot is in the new leader's log.
        var index = raft.logStartIndex + 1
        while index <= RaftIndex(committed.count) {
            let known = committed[Int(index) - 1]
            guard let entry = raft.entry(at: index), entry.term == known.term, entry.payload == known.payload else {
                throw fail("leader completeness: node \(id) leads term \(term) without committed entry \(index)")
            }
            index += 1
        }
    }

    private func checkNode(_ n: Int) throws(SimFailure) {
        guard let raft = nodes[n].raft else { return }
        guard raft.appliedIndex <= raft.commitIndex, raft.commitIndex >= nodes[n].lastCommit else {
            throw fail("node \(n + 1) commit went from \(nodes[n].lastCommit) to \(raft.commitIndex) (applied \(raft.appliedIndex))")
        }
        nodes[n].lastCommit = raft.commitIndex
        if raft.role == .leader, let existing = leaders[raft.term], existing != raft.id {
            throw fail("election safety: node \(raft.id) leads term \(raft.term) already led by \(existing)")
        }
    }

    /// Log matching: two logs holding an entry with the same index and term agree on everything up to it.
    func checkLogMatching() throws(SimFailure) {
        let live = nodes.compactMap(\.raft)
        for a in live.indices {
            for b in live.indices where b > a {
                let x = live[a], y = live[b]
                let low = max(x.logStartIndex, y.logStartIndex) + 1
                var high = min(x.lastLogIndex, y.lastLogIndex)
                while high >= low, x.term(at: high) != y.term(at: high) { high -= 1 }
                var index = low
                while index <= high {
                    guard x.entry(at: index) == y.entry(at: index) else {
                        throw fail("log matching: nodes \(x.id) and \(y.id) share (\(high), t\(x.term(at: high) ?? 0)) but differ at \(index)")
                    }
                    index += 1
                }
            }
        }
    }
}
