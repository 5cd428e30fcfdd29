@testable import Raft

/// A hand-driven cluster for step-by-step tests: the test decides which messages arrive and when writes
/// become durable.
struct ManualCluster {
    struct Disk {
        var hardState = RaftHardState()
        var snapshot: RaftSnapshot?
        var log: [RaftLogEntry] = []
        var pending: [(RaftStorageSequence, RaftAction)] = []
    }

    var nodes: [RaftNode?]
    var disks: [Disk]
    var applied: [[RaftLogEntry]]
    var outbox: [RaftEnvelope] = []
    var lastActions: [[RaftAction]]
    var now = RaftInstant(nanoseconds: 1_000_000)
    let configurations: [RaftConfiguration]

    /// Node ids are 1...count; `configure` adjusts each node's configuration.
    init(count: Int, configure: (inout RaftConfiguration) -> Void = { _ in }) throws {
        var configurations: [RaftConfiguration] = []
        for id in 1...UInt64(count) {
            var configuration = RaftConfiguration(
                id: id, voters: Array(1...UInt64(count)),
                electionTimeoutMin: .milliseconds(100), electionTimeoutMax: .milliseconds(200),
                heartbeatInterval: .milliseconds(20))
            configure(&configuration)
            configurations.append(configuration)
        }
        self.configurations = configurations
        disks = Array(repeating: Disk(), count: count)
        applied = Array(repeating: [], count: count)
        lastActions = Array(repeating: [], count: count)
        nodes = []
        for k in 0..<count {
            nodes.append(try RaftNode(configuration: configurations[k], restoring: RaftPersistentState(), seed: UInt64(k + 1), now: now))
        }
    }

    func node(_ id: RaftNodeID) -> RaftNode { nodes[Int(id - 1)]! }

    /// Replaces node `id` with one rebuilt from `state` (for tests that start from prepared logs).
    mutating func restore(_ id: RaftNodeID, _ state: RaftPersistentState) throws {
        let k = Int(id - 1)
        disks[k] = Disk(hardState: state.hardState, snapshot: state.snapshot, log: state.entries)
        nodes[k] = try RaftNode(configuration: configurations[k], restoring: state, seed: id, now: now)
    }

    /// Feeds one input to node `id` and carries out its actions (writes stay pending until `persist`).
    @discardableResult
    mutating func step(_ id: RaftNodeID, _ input: RaftInput) -> [RaftAction] {
        let k = Int(id - 1)
        guard nodes[k] != nil else { return [] }
        let actions = nodes[k]!.step(input, now: now)
        lastActions[k] = actions
        for action in actions {
            switch action {
            case let .send(envelope): outbox.append(envelope)
            case let .persistHardState(_, sequence), let .appendLog(_, sequence), let .installSnapshot(_, sequence):
                disks[k].pending.append((sequence, action))
            case .compactLog:
                disks[k].pending.append((0, action))
            case let .apply(entries):
                applied[k].append(contentsOf: entries)
            case let .takeSnapshot(index):
                let data = SimStateMachine.encode(applied[k][..<Int(index)])
                disks[k].snapshot = RaftSnapshot(metadata: RaftSnapshotMetadata(index: index, term: applied[k][Int(index) - 1].term), data: data)
                step(id, .snapshotCreated(index: index, data: data))
            case .statusChanged, .proposalAccepted, .proposalRejected:
                break
            }
            if case let .installSnapshot(snapshot, _) = action, let entries = try? SimStateMachine.decode(snapshot.data) {
                applied[k] = entries
            }
        }
        return actions
    }

    /// Makes node `id`'s pending writes durable and tells it.
    @discardableResult
    mutating func persist(_ id: RaftNodeID) -> [RaftAction] {
        let k = Int(id - 1)
        var through: RaftStorageSequence = 0
        for (sequence, action) in disks[k].pending {
            through = max(through, sequence)
            switch action {
            case let .persistHardState(state, _): disks[k].hardState = state
            case let .appendLog(entries, _):
                if let first = entries.first { disks[k].log.removeAll { $0.index >= first.index } }
                disks[k].log.append(contentsOf: entries)
            case let .installSnapshot(snapshot, _):
                let keep = disks[k].log.contains { $0.index == snapshot.metadata.index && $0.term == snapshot.metadata.term }
                disks[k].snapshot = snapshot
                if keep { disks[k].log.removeAll { $0.index <= snapshot.metadata.index } } else { disks[k].log = [] }
            case let .compactLog(index): disks[k].log.removeAll { $0.index <= index }
            default: break
            }
        }
        disks[k].pending = []
        return through > 0 ? step(id, .persisted(through: through)) : []
    }

    /// Crashes node `id`: unflushed writes are lost and it stops receiving.
    mutating func crash(_ id: RaftNodeID) {
        let k = Int(id - 1)
        nodes[k] = nil
        disks[k].pending = []
        applied[k] = []
        outbox.removeAll { $0.to == id || $0.from == id }
    }

    /// Rebuilds node `id` from its durable disk.
    mutating func restart(_ id: RaftNodeID) throws {
        let k = Int(id - 1)
        let disk = disks[k]
        nodes[k] = try RaftNode(
            configuration: configurations[k],
            restoring: RaftPersistentState(hardState: disk.hardState, snapshot: disk.snapshot, entries: disk.log),
            seed: id &+ 100, now: now)
        applied[k] = (try? disk.snapshot.map { try SimStateMachine.decode($0.data) }) ?? []
    }

    mutating func advance(milliseconds: UInt64) {
        now = now.advanced(byNanoseconds: milliseconds * 1_000_000)
    }

    /// Advances time in small steps, ticking the given nodes, delivering allowed messages and persisting
    /// everything, until `until` holds or `maxMilliseconds` pass. Returns whether `until` held.
    @discardableResult
    mutating func run(
        milliseconds maxMilliseconds: UInt64, ticking ids: [RaftNodeID],
        allow: (RaftEnvelope) -> Bool = { _ in true }, until: (ManualCluster) -> Bool = { _ in false }
    ) -> Bool {
        var elapsed: UInt64 = 0
        while elapsed <= maxMilliseconds {
            if until(self) { return true }
            for id in ids { step(id, .tick) }
            settle(allow: allow)
            advance(milliseconds: 5)
            elapsed += 5
        }
        return until(self)
    }

    /// Delivers allowed messages and persists all writes until nothing moves (bounded).
    mutating func settle(allow: (RaftEnvelope) -> Bool = { _ in true }) {
        for _ in 0..<10_000 {
            var moved = false
            for k in nodes.indices where nodes[k] != nil && !disks[k].pending.isEmpty {
                persist(RaftNodeID(k + 1))
                moved = true
            }
            let batch = outbox
            outbox = []
            for envelope in batch where allow(envelope) && nodes[Int(envelope.to - 1)] != nil {
                step(envelope.to, .receive(envelope))
                moved = true
            }
            if !moved { return }
        }
    }

    func leader(among ids: [RaftNodeID]) -> RaftNodeID? {
        ids.first { nodes[Int($0 - 1)]?.role == .leader }
    }
}
