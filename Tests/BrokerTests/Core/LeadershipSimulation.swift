import ClusterMetadata
import KafkaProtocol

@testable import BrokerCore
import TestKit

// Over 400 lines on purpose: one simulation, whose model (controller, brokers, WAL writer, network)
// and the invariants checked against it belong together.

/// Two brokers leading the partitions of one topic through `PartitionLeadership`, with a controller
/// that moves leaders, fences and restarts brokers, metadata that reaches each broker late, a WAL
/// writer whose requests travel in order per connection and whose answers come back in any order,
/// connections that break and brokers that are killed. Every step is checked against the
/// invariants of leader hand-off; `violations` collects what broke.
struct LeadershipSimulation {
    typealias Lease = PartitionLeadership.Lease

    /// One append as the client that sent it sees it.
    struct Tracked {
        var id: UInt64
        var lease: Lease
        var baseOffset: Int64
        var nextOffset: Int64
        var answered = false
    }

    struct AppendKey: Hashable {
        var broker: NodeID
        var incarnation: Int
        var serial: UInt64
        var number: UInt64
    }

    struct ConnectionKey: Hashable {
        var broker: NodeID
        var incarnation: Int
        var partition: PartitionKey
        var serial: Int
    }

    struct Request {
        var append: AppendKey
        var lease: Lease
        var generation: UInt64
        var baseOffset: Int64
        var count: Int64
    }

    struct Answer {
        var connection: ConnectionKey
        var request: Request
        var failure: PartitionLeadership.AppendFailure?
    }

    /// A take-over or resync under way: it first fences the stream at the writer, then reports the end.
    struct Job {
        var lease: Lease
        var resync: Bool
        var fencedEnd: Int64?
    }

    struct Broker {
        let id: NodeID
        var incarnation = 0
        var machine: PartitionLeadership
        /// Index into the controller's history of the image applied last.
        var version: Int?
        /// The first image a restarted broker may see: the one holding its new registration.
        var firstVersion = 0
        var jobs: [Job] = []
        var connection: [PartitionKey: Int] = [:]
        var nextConnection = 0

        init(id: NodeID) {
            self.id = id
            machine = PartitionLeadership(nodeId: id)
        }
    }

    struct Coverage {
        var acknowledged = 0
        var failed = 0
        var resignedWithAppends = 0
        var fencedAnswers = 0
        var answersOutOfOrder = 0
        var resyncs = 0
        var moves = 0
        var kills = 0
        var brokenConnections = 0

        static func + (a: Coverage, b: Coverage) -> Coverage {
            Coverage(
                acknowledged: a.acknowledged + b.acknowledged, failed: a.failed + b.failed,
                resignedWithAppends: a.resignedWithAppends + b.resignedWithAppends, fencedAnswers: a.fencedAnswers + b.fencedAnswers,
                answersOutOfOrder: a.answersOutOfOrder + b.answersOutOfOrder, resyncs: a.resyncs + b.resyncs, moves: a.moves + b.moves,
                kills: a.kills + b.kills, brokenConnections: a.brokenConnections + b.brokenConnections)
        }
    }

    static let topic = "t"
    static let partitionCount: Int32 = 3

    var random: SeededRandom
    var history: [MetadataState] = []
    var nodeIncarnation: [NodeID: Int64] = [:]
    var nextIndex: UInt64 = 0
    var brokers: [Broker] = [Broker(id: 1), Broker(id: 2)]
    var wal = SimulatedWAL()
    var tracked: [AppendKey: Tracked] = [:]
    var nextAppendId: UInt64 = 0
    var requests: [ConnectionKey: [Request]] = [:]
    var answers: [Answer] = []
    /// Per lease, where the last acknowledged append ended and the highest watermark seen.
    var acknowledgedEnd: [Lease: Int64] = [:]
    var highWatermark: [Lease: Int64] = [:]
    var violations: [String] = []
    var coverage = Coverage()
    /// Whether the writer refuses an append now and then; off for the final check.
    var faults = true

    init(seed: UInt64) {
        random = SeededRandom(seed: seed)
        var state = MetadataState()
        for id: NodeID in [1, 2] {
            if case .nodeRegistered(let incarnation) = state.apply(.registerNode(Self.registration(id)), index: next()) {
                nodeIncarnation[id] = incarnation
            }
        }
        _ = state.apply(
            .createTopics([TopicSpec(name: Self.topic, topicId: KafkaUUID(high: 0x4000_0000_0000_0007, low: 0x8000_0000_0000_0001), partitionCount: Self.partitionCount)]),
            index: next())
        history = [state]
    }

    static func registration(_ id: NodeID) -> NodeRegistration {
        NodeRegistration(id: id, kind: .broker, zone: "a", listener: "127.0.0.1:\(9000 + id)", admin: "127.0.0.1:\(8000 + id)")
    }

    mutating func next() -> UInt64 {
        nextIndex += 1
        return nextIndex
    }

    var latest: MetadataState { history[history.count - 1] }

    // MARK: Steps

    mutating func step() {
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<3: moveLeader()
        case 3..<4: fenceOrUnfence()
        case 4..<14: deliverMetadata(Int.random(in: 0..<brokers.count, using: &random))
        case 14..<28: advanceJob()
        case 28..<55: append(Int.random(in: 0..<brokers.count, using: &random))
        case 55..<77: deliverRequest()
        case 77..<97: deliverAnswer()
        case 97..<99: breakConnection()
        default:
            if Int.random(in: 0..<4, using: &random) == 0 { kill(Int.random(in: 0..<brokers.count, using: &random)) }
        }
        checkInvariants()
    }

    mutating func propose(_ command: MetadataCommand) {
        var state = latest
        switch state.apply(command, index: next()) {
        case .ok: history.append(state)
        case .nodeRegistered(let incarnation):
            if case .registerNode(let registration) = command { nodeIncarnation[registration.id] = incarnation }
            history.append(state)
        default: break
        }
    }

    mutating func moveLeader() {
        let partition = Int32.random(in: 0..<Self.partitionCount, using: &random)
        let target = brokers[Int.random(in: 0..<brokers.count, using: &random)].id
        let before = history.count
        propose(.moveLeader(topic: Self.topic, partition: partition, to: target))
        if history.count > before, latest.topics[Self.topic]?.partitions[Int(partition)].leader == target { coverage.moves += 1 }
    }

    mutating func fenceOrUnfence() {
        let id = brokers[Int.random(in: 0..<brokers.count, using: &random)].id
        guard let incarnation = nodeIncarnation[id], let node = latest.nodes[id] else { return }
        propose(node.state == .active ? .fenceNode(id: id, incarnation: incarnation) : .unfenceNode(id: id, incarnation: incarnation))
    }

    /// Hands broker `index` a newer image: `version`, or one picked at random.
    mutating func deliverMetadata(_ index: Int, version chosen: Int? = nil) {
        let lowest = max((brokers[index].version ?? -1) + 1, brokers[index].firstVersion)
        guard lowest < history.count else { return }
        let version = chosen ?? Int.random(in: lowest..<history.count, using: &random)
        brokers[index].version = version
        let actions = brokers[index].machine.apply(history[version])
        perform(actions, at: index)
        let expected = Set(history[version].partitionKeys(ledBy: brokers[index].id))
        let led = Set(brokers[index].machine.led.keys)
        if led != expected {
            violations.append("broker \(brokers[index].id) leads \(led.sorted()) but image \(version) gives it \(expected.sorted())")
        }
    }

    /// Moves one take-over or resync a step on: the fence at the writer, then the end reported.
    mutating func advanceJob() {
        let candidates = brokers.indices.filter { !brokers[$0].jobs.isEmpty }
        guard let index = candidates.randomElement(using: &random) else { return }
        let position = Int.random(in: 0..<brokers[index].jobs.count, using: &random)
        let job = brokers[index].jobs[position]
        guard let current = brokers[index].machine.partition(job.lease.key), current.lease == job.lease else {
            brokers[index].jobs.remove(at: position)
            return
        }
        guard let end = job.fencedEnd else {
            guard let end = wal.fence(job.lease.streamId, epoch: job.lease.epoch) else {
                // A newer leader holds the stream: the job gives up and the metadata will move the partition.
                brokers[index].jobs.remove(at: position)
                return
            }
            brokers[index].jobs[position].fencedEnd = end
            return
        }
        brokers[index].jobs.remove(at: position)
        brokers[index].nextConnection += 1
        brokers[index].connection[job.lease.key] = brokers[index].nextConnection
        if job.resync {
            coverage.resyncs += 1
            perform(brokers[index].machine.resynced(job.lease, end: max(end, current.highWatermark)), at: index)
        } else {
            perform(brokers[index].machine.becameReady(job.lease, end: end, logStart: 0), at: index)
        }
    }

    mutating func append(_ index: Int, to partition: PartitionKey? = nil) {
        let key = partition ?? PartitionKey(topic: Self.topic, partition: Int32.random(in: 0..<Self.partitionCount, using: &random))
        let count = Int64.random(in: 1...4, using: &random)
        let broker = brokers[index]
        guard let slot = try? broker.machine.nextAppend(key), let connection = broker.connection[key] else { return }
        let assigned: (number: UInt64, generation: UInt64, baseOffset: Int64)
        do {
            assigned = try brokers[index].machine.assign(slot.lease, count: count)
        } catch {
            violations.append("assign refused \(error) right after nextAppend offered \(key)")
            return
        }
        if assigned.number != slot.number || assigned.baseOffset != slot.baseOffset {
            violations.append("assign gave \(assigned) after nextAppend foresaw \(slot)")
        }
        nextAppendId += 1
        let appendKey = AppendKey(broker: broker.id, incarnation: broker.incarnation, serial: slot.lease.serial, number: assigned.number)
        tracked[appendKey] = Tracked(id: nextAppendId, lease: slot.lease, baseOffset: assigned.baseOffset, nextOffset: assigned.baseOffset + count)
        let connectionKey = ConnectionKey(broker: broker.id, incarnation: broker.incarnation, partition: key, serial: connection)
        requests[connectionKey, default: []].append(
            Request(append: appendKey, lease: slot.lease, generation: assigned.generation, baseOffset: assigned.baseOffset, count: count))
    }

    /// The writer takes the oldest request of one connection.
    mutating func deliverRequest() {
        guard let connection = requests.keys.filter({ !(requests[$0]?.isEmpty ?? true) }).randomElement(using: &random) else { return }
        let request = requests[connection]!.removeFirst()
        let failure: PartitionLeadership.AppendFailure?
        if faults, Int.random(in: 0..<40, using: &random) == 0 {
            failure = .init(code: KafkaErrorCode.invalidRequest.rawValue, message: "refused by the writer")
        } else {
            failure = wal.append(
                tracked[request.append]!.id, stream: request.lease.streamId, epoch: request.lease.epoch, baseOffset: request.baseOffset,
                count: request.count)
        }
        answers.append(Answer(connection: connection, request: request, failure: failure))
    }

    mutating func deliverAnswer() {
        guard !answers.isEmpty else { return }
        let answer = answers.remove(at: Int.random(in: 0..<answers.count, using: &random))
        guard let index = brokers.firstIndex(where: { $0.id == answer.connection.broker }),
              brokers[index].incarnation == answer.connection.incarnation
        else { return }  // its process is gone
        if answer.failure?.code == KafkaErrorCode.fencedLeaderEpoch.rawValue { coverage.fencedAnswers += 1 }
        if let led = brokers[index].machine.partition(answer.request.lease.key), led.lease == answer.request.lease,
           let head = led.queue.first, head.generation == answer.request.generation, head.baseOffset != answer.request.baseOffset {
            coverage.answersOutOfOrder += 1
        }
        let actions = brokers[index].machine.answered(
            answer.request.lease, generation: answer.request.generation, baseOffset: answer.request.baseOffset, failure: answer.failure)
        perform(actions, at: index)
    }

    /// A connection breaks: requests not yet taken are lost, and every unanswered append on it
    /// fails at the broker whether or not the writer made it durable.
    mutating func breakConnection() {
        let open = Set(requests.keys.filter { !(requests[$0]?.isEmpty ?? true) } + answers.map(\.connection))
        guard let connection = open.randomElement(using: &random) else { return }
        coverage.brokenConnections += 1
        let lost = requests.removeValue(forKey: connection) ?? []
        let failure = PartitionLeadership.AppendFailure(code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "connection closed")
        for index in answers.indices where answers[index].connection == connection { answers[index].failure = failure }
        answers += lost.map { Answer(connection: connection, request: $0, failure: failure) }
    }

    /// SIGKILL and restart: a fresh machine, requests already sent may still reach the writer, and
    /// the broker registers again (the controller bumps the epochs it led).
    mutating func kill(_ index: Int) {
        coverage.kills += 1
        let id = brokers[index].id
        for connection in requests.keys where connection.broker == id && connection.incarnation == brokers[index].incarnation {
            if Bool.random(using: &random) { requests[connection] = nil }
        }
        var fresh = Broker(id: id)
        fresh.incarnation = brokers[index].incarnation + 1
        fresh.nextConnection = brokers[index].nextConnection
        propose(.registerNode(Self.registration(id)))
        fresh.firstVersion = history.count - 1
        brokers[index] = fresh
    }

    // MARK: Actions

    mutating func perform(_ actions: [PartitionLeadership.Action], at index: Int) {
        let broker = brokers[index]
        for action in actions {
            switch action {
            case .takeOver(let lease):
                brokers[index].jobs.append(Job(lease: lease, resync: false))
            case .resigned(let lease, let failed):
                brokers[index].jobs.removeAll { $0.lease == lease }
                if !failed.isEmpty { coverage.resignedWithAppends += 1 }
                for number in failed { answer(AppendKey(broker: broker.id, incarnation: broker.incarnation, serial: lease.serial, number: number), lease, "resigned") }
                let open = tracked.filter { $0.key.broker == broker.id && $0.key.incarnation == broker.incarnation && $0.value.lease == lease && !$0.value.answered }
                if !open.isEmpty { violations.append("lease \(lease) resigned leaving appends \(open.keys.map(\.number).sorted()) unanswered") }
            case .ready(let lease, let end):
                if end != wal.end(lease.streamId), wal.fenced[lease.streamId] == lease.epoch {
                    violations.append("lease \(lease) ready at \(end) but the stream ends at \(wal.end(lease.streamId))")
                }
            case .acknowledge(let lease, let number, let base, let next):
                let key = AppendKey(broker: broker.id, incarnation: broker.incarnation, serial: lease.serial, number: number)
                guard let append = tracked[key] else {
                    violations.append("acknowledged unknown append \(number) of \(lease)")
                    continue
                }
                answer(key, lease, "acknowledged")
                coverage.acknowledged += 1
                if append.baseOffset != base || append.nextOffset != next {
                    violations.append("append \(number) acknowledged at [\(base), \(next)) but assigned [\(append.baseOffset), \(append.nextOffset))")
                }
                if !wal.holds(.init(append: append.id, baseOffset: base, nextOffset: next), in: lease.streamId) {
                    violations.append("append \(number) of \(lease) acknowledged at [\(base), \(next)) but not durable there")
                }
                if let previous = acknowledgedEnd[lease], base < previous {
                    violations.append("append \(number) of \(lease) acknowledged at \(base) after one ending at \(previous)")
                }
                acknowledgedEnd[lease] = next
                if brokers[index].machine.partition(lease.key)?.lease != lease {
                    violations.append("append \(number) acknowledged for \(lease), which is not led")
                }
            case .fail(let lease, let number, _, _):
                coverage.failed += 1
                answer(AppendKey(broker: broker.id, incarnation: broker.incarnation, serial: lease.serial, number: number), lease, "failed")
            case .resync(let lease, let fenced):
                brokers[index].connection[lease.key] = nil
                if !fenced { brokers[index].jobs.append(Job(lease: lease, resync: true)) }
            case .wakeReaders:
                break
            }
        }
    }

    mutating func answer(_ key: AppendKey, _ lease: Lease, _ how: String) {
        guard let append = tracked[key] else {
            violations.append("\(how) unknown append \(key.number) of \(lease)")
            return
        }
        if append.answered { violations.append("append \(key.number) of \(lease) \(how) after it was answered") }
        if append.lease != lease { violations.append("append \(key.number) \(how) under \(lease), sent under \(append.lease)") }
        tracked[key]?.answered = true
    }

    // MARK: Invariants

    mutating func checkInvariants() {
        for broker in brokers {
            for (key, led) in broker.machine.led {
                let lease = led.lease
                if led.highWatermark > led.nextOffset {
                    violations.append("\(key) on \(broker.id): high watermark \(led.highWatermark) beyond the next offset \(led.nextOffset)")
                }
                if led.highWatermark > wal.end(lease.streamId) {
                    violations.append("\(key) on \(broker.id): high watermark \(led.highWatermark) beyond the durable end \(wal.end(lease.streamId))")
                }
                if let seen = highWatermark[lease], led.highWatermark < seen {
                    violations.append("\(key) on \(broker.id): high watermark went back from \(seen) to \(led.highWatermark)")
                }
                highWatermark[lease] = max(highWatermark[lease] ?? 0, led.highWatermark)
                if led.phase == .ready, led.epochStartOffset > led.highWatermark {
                    violations.append("\(key) on \(broker.id): epoch starts at \(led.epochStartOffset), above the high watermark")
                }
                if led.phase != .ready, !led.queue.isEmpty {
                    violations.append("\(key) on \(broker.id): \(led.queue.count) appends queued while \(led.phase)")
                }
                // Queued appends continue the acknowledged log without gaps or overlaps.
                var expected = led.highWatermark
                for item in led.queue {
                    if item.baseOffset != expected || item.generation != led.generation {
                        violations.append("\(key) on \(broker.id): append queued at \(item.baseOffset) (generation \(item.generation)), expected \(expected) (\(led.generation))")
                    }
                    expected = item.nextOffset
                }
                if led.phase == .ready, expected != led.nextOffset {
                    violations.append("\(key) on \(broker.id): queue ends at \(expected), next offset is \(led.nextOffset)")
                }
            }
        }
    }

    // MARK: The end

    /// Delivers the newest metadata everywhere and lets every message and job finish.
    mutating func settle() {
        for index in brokers.indices { deliverMetadata(index, version: history.count - 1) }
        var rounds = 0
        while rounds < 10_000, !requests.values.allSatisfy(\.isEmpty) || !answers.isEmpty || brokers.contains(where: { !$0.jobs.isEmpty }) {
            rounds += 1
            deliverRequest()
            deliverAnswer()
            advanceJob()
            checkInvariants()
        }
        if rounds == 10_000 { violations.append("did not settle") }
    }

    /// After settling: every append of a live broker was answered, each partition with a leader is
    /// ready there under its current epoch, and an append to it becomes durable and acknowledged.
    mutating func finish() {
        faults = false
        settle()
        for (key, append) in tracked where !append.answered {
            if brokers.contains(where: { $0.id == key.broker && $0.incarnation == key.incarnation }) {
                violations.append("append \(key.number) of \(append.lease) never answered")
            }
        }
        for partition in 0..<Self.partitionCount {
            let key = PartitionKey(topic: Self.topic, partition: partition)
            guard let record = latest.partition(key), let index = brokers.firstIndex(where: { $0.id == record.leader }) else { continue }
            guard let led = brokers[index].machine.partition(key), led.phase == .ready, led.lease.epoch == record.leaderEpoch else {
                violations.append("\(key) is not ready on its leader \(record.leader) at epoch \(record.leaderEpoch)")
                continue
            }
            // A request the writer took on a connection given up earlier may still have moved the
            // stream's end, failing the first try and resyncing; as a producer would, try again.
            let before = coverage.acknowledged
            for _ in 0..<3 where coverage.acknowledged == before {
                append(index, to: key)
                settle()
            }
            if coverage.acknowledged == before { violations.append("an append to \(key) on its leader was not acknowledged") }
        }
    }
}
