import ClusterMetadata
import ControllerClient
@testable import ControllerCore
import Testing
import TestKit

private struct SimulationFailure: Error, CustomStringConvertible {
    var description: String
}

/// One seeded run: a `BrokerSessions` driven by a simulated clock, with the real `MetadataState` as the applied
/// metadata, nodes that heartbeat, fall silent, restart with a new incarnation and lose connections, proposals
/// that commit, fail or time out (and then perhaps commit anyway), and leadership that comes and goes. A model
/// kept beside the machine says what it must and must not propose; it is checked after every step.
private struct SessionSimulation {
    /// A fence or unfence the machine asked for, not yet answered.
    struct Outstanding {
        var node: NodeID
        var token: UInt64
        var command: MetadataCommand
        /// Made in the current leadership (answers to older ones must change nothing).
        var current: Bool
    }

    var random: SeededRandom
    let seed: UInt64
    var sessions: BrokerSessions
    var metadata = MetadataState()
    var index: UInt64 = 0
    var now: Duration = .zero
    var step = 0

    var kinds: [NodeID: NodeKind] = [:]
    /// The connection each node's process uses now, and the incarnations of processes it replaced.
    var processConnection: [NodeID: UInt64?] = [:]
    var staleIncarnations: [NodeID: [Int64]] = [:]
    var silent: Set<NodeID> = []
    var nextConnection: UInt64 = 100

    var outstanding: [Outstanding] = []
    /// Commands that timed out but commit later.
    var lateCommits: [MetadataCommand] = []

    // The model of what the machine knows, per leadership.
    var leading = false
    var draining = false
    var leaderSince: Duration = .zero
    var lastCheck: Duration?
    var seen: [NodeID: Duration] = [:]
    var bound: [NodeID: UInt64] = [:]
    var closedAt: [NodeID: Duration] = [:]
    /// How often each kind of proposal was made, so a run that never exercises one is noticed.
    var timeoutFences = 0
    var closeFences = 0
    var unfences = 0
    var stalls = 0

    init(seed: UInt64) {
        self.seed = seed
        random = SeededRandom(seed: seed)
        let timeout = Duration.milliseconds(random.between(300, 2000))
        let grace = Duration.milliseconds(random.between(50, 600))
        // Stalls (checks further apart than this) are as common as timeouts: time jumps reach twice the timeout.
        let stall = Duration.milliseconds(random.between(1000, 3000))
        sessions = BrokerSessions(sessionTimeout: timeout, closeGrace: grace, checkInterval: .milliseconds(100), stallThreshold: stall)
    }

    func fail(_ message: String) -> SimulationFailure {
        SimulationFailure(description: "seed \(seed) step \(step) at \(now): \(message)")
    }

    mutating func apply(_ command: MetadataCommand) -> MetadataResult {
        index += 1
        return metadata.apply(command, index: index)
    }

    mutating func run(steps: Int) throws {
        let count = random.between(2, 5)
        for id in 1...NodeID(count) {
            kinds[id] = id == 4 ? .walWriter : id == 5 ? .controller : .broker
            try restart(id)
        }
        try setLeading(true)
        for _ in 0..<steps {
            step += 1
            try randomStep()
            try checkBookkeeping()
        }
        // Every proposal gets its answer; the machine then has nothing in flight.
        while !outstanding.isEmpty { try answer(at: 0) }
        try checkBookkeeping()
        for id in kinds.keys.sorted() where sessions.proposalInFlight(for: id) != nil {
            throw fail("node \(id) has a proposal in flight after every proposal was answered")
        }
    }

    mutating func randomStep() throws {
        let roll = random.below(100)
        let node = NodeID(random.between(1, kinds.count))
        switch roll {
        case 0..<30:
            // Time passes; long silences now and then.
            let timeoutMs = Int(sessions.sessionTimeout / .milliseconds(1))
            let delta = random.chance(800) ? random.between(1, 120) : random.between(100, 2 * timeoutMs)
            now += .milliseconds(delta)
            try tick()
        case 30..<55:
            if !silent.contains(node) { try heartbeat(node) }
        case 55..<60:
            try staleHeartbeat(node)
        case 60..<63:
            try restart(node)
        case 63..<68:
            if silent.contains(node) { silent.remove(node) } else { silent.insert(node) }
        case 68..<75:
            try closeConnection(of: node)
        case 75..<90:
            if !outstanding.isEmpty { try answer(at: random.below(outstanding.count)) }
        case 90..<93:
            if let command = lateCommits.first {
                lateCommits.removeFirst()
                _ = apply(command)
            }
        case 93..<95:
            try setLeading(!leading)
        case 95:
            if random.chance(50), !draining {
                draining = true
                sessions.beginDraining()
            }
        default:
            // A node reconnects without closing anything the leader saw.
            processConnection[node] = random.chance(500) ? nil : newConnection()
        }
    }

    mutating func newConnection() -> UInt64 {
        nextConnection += 1
        return nextConnection
    }

    mutating func restart(_ id: NodeID) throws {
        let registration = NodeRegistration(
            id: id, kind: kinds[id]!, zone: "z\(id % 2)", listener: "127.0.0.1:\(9000 + id)", admin: "127.0.0.1:\(9500 + id)")
        let previous = metadata.nodes[id]?.incarnation
        guard case let .nodeRegistered(incarnation) = apply(.registerNode(registration)), incarnation != previous else {
            throw fail("registration of \(id) failed")
        }
        if let previous { staleIncarnations[id, default: []].append(previous) }
        let connection = newConnection()
        processConnection[id] = connection
        silent.remove(id)
        sessions.sessionStarted(node: id, connection: connection, now: now)
        noteAccepted(id, connection: connection)
    }

    /// The model's record of a heartbeat (or registration) the machine took.
    mutating func noteAccepted(_ id: NodeID, connection: UInt64?) {
        seen[id] = now
        closedAt[id] = nil
        bound[id] = connection
    }

    mutating func heartbeat(_ id: NodeID) throws {
        let record = metadata.nodes[id]!
        let connection = processConnection[id] ?? nil
        let (answer, actions) = sessions.heartbeat(
            node: id, incarnation: record.incarnation, record: record, connection: connection, now: now)
        guard leading else {
            if answer.errorCode != notControllerErrorCode || !actions.isEmpty { throw fail("a follower answered a heartbeat") }
            return
        }
        if answer.errorCode != 0 || answer.fenced != (record.state == .fenced) {
            throw fail("heartbeat of \(id) answered \(answer) for a record in state \(record.state)")
        }
        noteAccepted(id, connection: connection)
        let hadProposal = outstanding.contains { $0.current && $0.node == id }
        for action in actions {
            guard case let .proposeUnfence(node, incarnation, token) = action, node == id, incarnation == record.incarnation else {
                throw fail("heartbeat of \(id) led to \(action)")
            }
            guard record.state == .fenced, !hadProposal else {
                throw fail("unfence of \(id) proposed while \(record.state), proposal in flight: \(hadProposal)")
            }
            unfences += 1
            try propose(node, token: token, .unfenceNode(id: node, incarnation: incarnation))
        }
        if record.state == .fenced, !hadProposal, actions.isEmpty {
            throw fail("fenced node \(id) heartbeated with its incarnation and no unfence was proposed")
        }
    }

    mutating func staleHeartbeat(_ id: NodeID) throws {
        guard let stale = random.pick(staleIncarnations[id, default: []]), let record = metadata.nodes[id] else { return }
        let before = sessions.proposalInFlight(for: id)
        let (answer, actions) = sessions.heartbeat(
            node: id, incarnation: stale, record: record, connection: newConnection(), now: now)
        let expected = leading ? MetadataErrorCode.staleBrokerEpoch : notControllerErrorCode
        if answer.errorCode != expected || !actions.isEmpty || sessions.proposalInFlight(for: id) != before {
            throw fail("a heartbeat of \(id) at stale incarnation \(stale) was answered \(answer) with \(actions)")
        }
    }

    mutating func closeConnection(of id: NodeID) throws {
        // Either the connection the node uses now or one the leader bound it to earlier.
        guard let connection = random.chance(700) ? (processConnection[id] ?? nil) : bound[id] else { return }
        processConnection[id] = random.chance(300) ? nil : newConnection()
        if random.chance(600) { silent.insert(id) }
        let actions = sessions.connectionClosed(connection, nodes: metadata.nodes, now: now)
        var expected: [NodeID] = []
        if leading, !draining {
            for node in bound.keys.sorted() where bound[node] == connection {
                bound[node] = nil
                guard kinds[node] == .broker else { continue }
                closedAt[node] = min(closedAt[node] ?? now, now)
                expected.append(node)
            }
        }
        let started = actions.compactMap { action -> NodeID? in
            if case let .closeGraceStarted(node, closed, deadline) = action, closed == connection, deadline == closedAt[node].map({ $0 + sessions.closeGrace }) {
                return node
            }
            return nil
        }
        if started != expected || actions.count != expected.count {
            throw fail("closing connection \(connection) gave \(actions), expected grace for \(expected)")
        }
    }

    mutating func tick() throws {
        let checks = leading && lastCheck.map { now - $0 >= sessions.checkInterval } != false
        let actions = sessions.tick(now: now, nodes: metadata.sortedNodes)
        if !checks {
            if !actions.isEmpty { throw fail("proposals \(actions) outside a check") }
            return
        }
        if let lastCheck, now - lastCheck > sessions.stallThreshold {
            // The machine was away: that time counts against no session and no close grace (never past now).
            let away = now - lastCheck - sessions.checkInterval
            for (id, last) in seen { seen[id] = min(last + away, now) }
            for (id, closed) in closedAt { closedAt[id] = min(closed + away, now) }
            stalls += 1
        }
        lastCheck = now
        for action in actions {
            guard case let .proposeFence(node, incarnation, reason, token) = action else { throw fail("tick gave \(action)") }
            guard let record = metadata.nodes[node], record.state == .active, record.kind != .controller,
                  record.incarnation == incarnation
            else { throw fail("fence of \(node) at \(incarnation) proposed for \(String(describing: metadata.nodes[node]))") }
            if outstanding.contains(where: { $0.current && $0.node == node }) {
                throw fail("a second proposal for \(node) while one is in flight")
            }
            let silence = now - max(seen[node] ?? leaderSince, leaderSince)
            let timedOut = seen[node] != nil && silence > sessions.sessionTimeout
            let closed = !draining && closedAt[node].map { $0 + sessions.closeGrace <= now } == true
            switch reason {
            case .sessionTimedOut where !timedOut:
                throw fail("node \(node) fenced for a timeout after \(silence) of silence")
            case .connectionClosed where !closed:
                throw fail("node \(node) fenced for a close (closed at \(String(describing: closedAt[node]))) within the grace")
            default: break
            }
            if reason == .sessionTimedOut { timeoutFences += 1 } else { closeFences += 1 }
            try propose(node, token: token, .fenceNode(id: node, incarnation: incarnation))
        }
        // And the other way round: every session that ran out is proposed fenced unless a proposal is in flight.
        for record in metadata.sortedNodes where record.state == .active && record.kind != .controller {
            guard let last = seen[record.id] else {
                seen[record.id] = now
                continue
            }
            let due = now - last > sessions.sessionTimeout
                || (!draining && closedAt[record.id].map { $0 + sessions.closeGrace <= now } == true)
            let busy = outstanding.contains { $0.current && $0.node == record.id }
            if due, !busy { throw fail("node \(record.id)'s session ran out and it was not fenced") }
        }
    }

    mutating func propose(_ node: NodeID, token: UInt64, _ command: MetadataCommand) throws {
        if sessions.proposalInFlight(for: node) != token { throw fail("proposal \(token) for \(node) is not the one in flight") }
        outstanding.append(Outstanding(node: node, token: token, command: command, current: true))
    }

    /// Answers one outstanding proposal: committed, failed, or timed out (and then committed later, or not).
    mutating func answer(at position: Int) throws {
        let proposal = outstanding.remove(at: position)
        switch random.below(3) {
        case 0:
            _ = apply(proposal.command)
        case 1:
            break
        default:
            if random.chance(500) { lateCommits.append(proposal.command) }
        }
        sessions.proposalFinished(node: proposal.node, token: proposal.token)
    }

    mutating func setLeading(_ leading: Bool) throws {
        self.leading = leading
        sessions.leadershipChanged(leading: leading)
        // The driver fails every proposal when leadership goes; the answers may reach the machine later.
        for position in outstanding.indices { outstanding[position].current = false }
        seen.removeAll()
        bound.removeAll()
        closedAt.removeAll()
        leaderSince = now
        lastCheck = nil
    }

    /// The machine's proposals in flight are exactly the model's unanswered ones of this leadership.
    func checkBookkeeping() throws {
        for id in kinds.keys.sorted() {
            let current = outstanding.filter { $0.current && $0.node == id }
            if current.count > 1 { throw fail("\(current.count) proposals in flight for \(id)") }
            if sessions.proposalInFlight(for: id) != current.first?.token {
                throw fail("machine has \(String(describing: sessions.proposalInFlight(for: id))) in flight for \(id), model \(current.map(\.token))")
            }
            if sessions.connection(of: id) != bound[id] {
                throw fail("node \(id) bound to \(String(describing: sessions.connection(of: id))), model \(String(describing: bound[id]))")
            }
        }
    }
}

@Suite struct BrokerSessionsSimulationTests {
    static let seeds: ClosedRange<UInt64> = 1...600

    @Test func seededRunsKeepTheSessionInvariants() throws {
        var timeoutFences = 0, closeFences = 0, unfences = 0, stalls = 0
        for seed in Self.seeds {
            var simulation = SessionSimulation(seed: seed)
            try simulation.run(steps: 250)
            timeoutFences += simulation.timeoutFences
            closeFences += simulation.closeFences
            unfences += simulation.unfences
            stalls += simulation.stalls
        }
        // The runs must exercise every path, or the invariants prove little.
        #expect(timeoutFences > Self.seeds.count, "\(timeoutFences) fences after a timeout")
        #expect(closeFences > Self.seeds.count / 4, "\(closeFences) fences after a close")
        #expect(unfences > Self.seeds.count, "\(unfences) unfences")
        #expect(stalls > Self.seeds.count, "\(stalls) checks after a stall")
    }

    @Test func aStaleIncarnationNeverRevivesAFencedNode() throws {
        var metadata = MetadataState()
        let registration = NodeRegistration(id: 1, kind: .broker, zone: "a", listener: "h:1", admin: "h:2")
        _ = metadata.apply(.registerNode(registration), index: 1)
        _ = metadata.apply(.registerNode(registration), index: 2)
        let record = try #require(metadata.nodes[1])
        _ = metadata.apply(.fenceNode(id: 1, incarnation: record.incarnation), index: 3)
        let fenced = try #require(metadata.nodes[1])
        #expect(fenced.state == .fenced)

        var sessions = BrokerSessions(sessionTimeout: .seconds(1), closeGrace: .milliseconds(200))
        sessions.leadershipChanged(leading: true)
        let stale = sessions.heartbeat(node: 1, incarnation: fenced.incarnation - 1, record: fenced, connection: 1, now: .seconds(5))
        #expect(stale.answer == BrokerSessions.HeartbeatAnswer(errorCode: MetadataErrorCode.staleBrokerEpoch, fenced: false))
        #expect(stale.actions.isEmpty)
        let current = sessions.heartbeat(node: 1, incarnation: fenced.incarnation, record: fenced, connection: 1, now: .seconds(5))
        #expect(current.answer.fenced)
        #expect(current.actions == [.proposeUnfence(node: 1, incarnation: fenced.incarnation, token: 1)])
    }

    @Test func aStalledControllerDoesNotFenceBrokersWhoseHeartbeatsItHasNotRead() throws {
        var metadata = MetadataState()
        _ = metadata.apply(.registerNode(NodeRegistration(id: 1, kind: .broker, zone: "a", listener: "h:1", admin: "h:2")), index: 1)
        _ = metadata.apply(.registerNode(NodeRegistration(id: 2, kind: .broker, zone: "a", listener: "h:3", admin: "h:4")), index: 2)
        let one = try #require(metadata.nodes[1]), two = try #require(metadata.nodes[2])
        var sessions = BrokerSessions(sessionTimeout: .seconds(2), closeGrace: .milliseconds(500))
        #expect(sessions.stallThreshold == .seconds(1))
        sessions.leadershipChanged(leading: true)
        _ = sessions.tick(now: .zero, nodes: metadata.sortedNodes)
        _ = sessions.heartbeat(node: 1, incarnation: one.incarnation, record: one, connection: 1, now: .milliseconds(100))
        _ = sessions.heartbeat(node: 2, incarnation: two.incarnation, record: two, connection: 2, now: .milliseconds(100))
        // The controller runs again 5 s later: both sessions look 5 s old, but it has not read the heartbeats
        // queued meanwhile. Nothing is fenced.
        #expect(sessions.tick(now: .milliseconds(5100), nodes: metadata.sortedNodes).isEmpty)
        // Broker 1's queued heartbeats are read now; broker 2 is really dead and is fenced a session after the stall.
        _ = sessions.heartbeat(node: 1, incarnation: one.incarnation, record: one, connection: 1, now: .milliseconds(5150))
        var now = Duration.milliseconds(5100)
        var fenced: [NodeID] = []
        while fenced.isEmpty, now < .seconds(10) {
            now += .milliseconds(100)
            _ = sessions.heartbeat(node: 1, incarnation: one.incarnation, record: one, connection: 1, now: now)
            fenced = sessions.tick(now: now, nodes: metadata.sortedNodes).compactMap {
                if case let .proposeFence(node, _, .sessionTimedOut, _) = $0 { return node } else { return nil }
            }
        }
        #expect(fenced == [2])
        // Checks at 0 and 5.1 s: 5 s away (the gap less one check), so broker 2's heartbeat at 0.1 s counts as
        // one at 5.1 s; its session runs out after 7.1 s, and the first check past that is at 7.2 s.
        #expect(now == .milliseconds(7200), "broker 2 fenced at \(now)")
    }
}
