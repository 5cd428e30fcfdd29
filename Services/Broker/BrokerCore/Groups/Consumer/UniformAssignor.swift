/// Kafka's default server-side assignor: spreads partitions as evenly as the subscriptions allow
/// while keeping every partition it can where it already is.
///
/// When all members that subscribe to anything subscribe to the same topics, their partition
/// counts differ by at most one and the number of partitions that change owner is the least any
/// such balanced assignment needs. Otherwise the result is balanced in the sense that no
/// partition could go from a member owning `c1` partitions to another subscriber of its topic
/// owning `c2 < c1 - 1`.
public struct UniformAssignor: ServerAssignor {
    /// "uniform", as in Kafka.
    public let name = "uniform"

    /// The assignor; it has no settings.
    public init() {}

    /// A balanced, sticky target assignment for every member of `spec`.
    public func assign(_ spec: AssignmentSpec) -> [String: MemberAssignment] {
        let problem = AssignmentProblem(spec)
        let active = problem.subscriptions.indices.filter { !problem.subscriptions[$0].isEmpty }
        let homogeneous = active.allSatisfy { problem.subscriptions[$0] == problem.subscriptions[active[0]] }
        guard !homogeneous else { return problem.result(Self.homogeneous(problem, members: active)) }
        var balancer = HeterogeneousBalancer(problem)
        return problem.result(balancer.run())
    }

    /// Every member in `members` subscribes to every topic of the problem (or there are none).
    ///
    /// The quotas are `base` or `base + 1` partitions; the larger ones go to members that already
    /// hold more than `base`, which maximises what stays put, then members keep up to their quota
    /// and the rest is dealt round-robin to whoever is short.
    static func homogeneous(_ problem: AssignmentProblem, members: [Int]) -> [[TopicPartitionIndex]] {
        var owned = [[TopicPartitionIndex]](repeating: [], count: problem.memberIds.count)
        guard !members.isEmpty else { return owned }
        let total = problem.partitionCounts.reduce(0, +)
        let base = total / members.count
        var extras = total % members.count

        var claims = PartitionClaims(problem)
        for member in members { owned[member] = claims.claim(problem.current[member]) }

        var quota = [Int](repeating: base, count: problem.memberIds.count)
        for member in members where extras > 0 && owned[member].count > base {
            quota[member] += 1
            extras -= 1
        }
        for member in members where extras > 0 && quota[member] == base {
            quota[member] += 1
            extras -= 1
        }
        for member in members where owned[member].count > quota[member] {
            claims.release(owned[member][quota[member]...])
            owned[member].removeSubrange(quota[member]...)
        }

        var unassigned = claims.unclaimed()[...]
        var short = members.filter { owned[$0].count < quota[$0] }
        while !short.isEmpty, !unassigned.isEmpty {
            for member in short {
                guard let next = unassigned.popFirst() else { break }
                owned[member].append(next)
            }
            short.removeAll { owned[$0].count >= quota[$0] }
        }
        return owned
    }
}

/// Which partitions of a problem already have an owner, first come first served.
struct PartitionClaims {
    private var taken: [[Bool]]

    init(_ problem: AssignmentProblem) {
        taken = problem.partitionCounts.map { [Bool](repeating: false, count: $0) }
    }

    /// Claims those of `partitions` nobody holds yet and returns them, in order.
    mutating func claim(_ partitions: [TopicPartitionIndex]) -> [TopicPartitionIndex] {
        partitions.filter { item in
            guard !taken[item.topic][Int(item.partition)] else { return false }
            taken[item.topic][Int(item.partition)] = true
            return true
        }
    }

    /// Gives `partitions` back.
    mutating func release<S: Sequence<TopicPartitionIndex>>(_ partitions: S) {
        for item in partitions { taken[item.topic][Int(item.partition)] = false }
    }

    /// Partitions without an owner, sorted by topic then partition.
    func unclaimed() -> [TopicPartitionIndex] {
        unclaimed(topic: taken.indices)
    }

    /// Unowned partitions of the given topics, sorted by partition within each topic.
    func unclaimed<S: Sequence<Int>>(topic topics: S) -> [TopicPartitionIndex] {
        var result: [TopicPartitionIndex] = []
        for topic in topics {
            for (partition, isTaken) in taken[topic].enumerated() where !isTaken {
                result.append(TopicPartitionIndex(topic: topic, partition: Int32(partition)))
            }
        }
        return result
    }
}

/// The uniform assignor for members with differing subscriptions.
///
/// Members keep every partition they may keep; unowned partitions go, topic by topic (those with
/// the fewest subscribers first), each to the least loaded subscriber; then partitions move from
/// the most loaded holder of a topic to its least loaded subscriber while the two differ by two
/// or more. Every move lowers the sum of squared member loads, so the loop ends, and it ends only
/// when no such move is left, which is the balance the assignor promises.
struct HeterogeneousBalancer {
    private let problem: AssignmentProblem
    private var load: [Int]
    /// Per topic and subscriber position: partitions kept from the current assignment.
    private var kept: [[[Int32]]]
    /// Per topic and subscriber position: partitions given in this run; these move first.
    private var given: [[[Int32]]]

    init(_ problem: AssignmentProblem) {
        self.problem = problem
        load = [Int](repeating: 0, count: problem.memberIds.count)
        kept = problem.subscribers.map { [[Int32]](repeating: [], count: $0.count) }
        given = kept
    }

    mutating func run() -> [[TopicPartitionIndex]] {
        var claims = PartitionClaims(problem)
        for member in problem.memberIds.indices {
            for item in claims.claim(problem.current[member]) {
                kept[item.topic][position(of: member, in: item.topic)].append(item.partition)
                load[member] += 1
            }
        }
        let order = problem.topics.indices.sorted { (problem.subscribers[$0].count, $0) < (problem.subscribers[$1].count, $1) }
        for topic in order { fill(topic, claims.unclaimed(topic: [topic])) }
        var moved = true
        while moved {
            moved = false
            for topic in order where balance(topic) { moved = true }
        }
        return owned()
    }

    /// Where `member` sits in the sorted subscriber list of `topic`.
    private func position(of member: Int, in topic: Int) -> Int {
        let subscribers = problem.subscribers[topic]
        var low = 0, high = subscribers.count
        while low < high {
            let middle = (low + high) / 2
            if subscribers[middle] < member { low = middle + 1 } else { high = middle }
        }
        return low
    }

    private func held(_ topic: Int, _ position: Int) -> Int {
        kept[topic][position].count + given[topic][position].count
    }

    /// Gives each of `partitions` (all of `topic`) to its least loaded subscriber.
    private mutating func fill(_ topic: Int, _ partitions: [TopicPartitionIndex]) {
        guard !partitions.isEmpty else { return }
        let subscribers = problem.subscribers[topic]
        var heap = PairHeap(subscribers.indices.map { (load[subscribers[$0]], $0) })
        for item in partitions {
            guard let (_, position) = heap.pop() else { return }
            given[topic][position].append(item.partition)
            load[subscribers[position]] += 1
            heap.push((load[subscribers[position]], position))
        }
    }

    /// Moves partitions of `topic` from its most to its least loaded subscriber while they differ
    /// by two or more; true if anything moved.
    ///
    /// Both heaps are lazy: an entry whose key no longer matches the member's load is skipped, and
    /// each change of load pushes a fresh entry. Ties go to the lower member index.
    private mutating func balance(_ topic: Int) -> Bool {
        let subscribers = problem.subscribers[topic]
        guard subscribers.count > 1 else { return false }
        var least = PairHeap(subscribers.indices.map { (load[subscribers[$0]], $0) })
        var most = PairHeap(subscribers.indices.filter { held(topic, $0) > 0 }.map { (-load[subscribers[$0]], $0) })
        var moved = false
        while true {
            guard let receiver = pop(&least, { self.load[subscribers[$0]] == $1 }),
                let donor = pop(&most, { self.load[subscribers[$0]] == -$1 && self.held(topic, $0) > 0 }),
                load[subscribers[donor]] - load[subscribers[receiver]] >= 2
            else { return moved }
            let partition = given[topic][donor].popLast() ?? kept[topic][donor].removeLast()
            given[topic][receiver].append(partition)
            load[subscribers[donor]] -= 1
            load[subscribers[receiver]] += 1
            moved = true
            for position in [donor, receiver] {
                least.push((load[subscribers[position]], position))
                if held(topic, position) > 0 { most.push((-load[subscribers[position]], position)) }
            }
        }
    }

    /// The first entry of `heap` that `isCurrent(position, key)` accepts; stale ones are dropped.
    private func pop(_ heap: inout PairHeap, _ isCurrent: (Int, Int) -> Bool) -> Int? {
        while let (key, position) = heap.pop() {
            if isCurrent(position, key) { return position }
        }
        return nil
    }

    private func owned() -> [[TopicPartitionIndex]] {
        var owned = [[TopicPartitionIndex]](repeating: [], count: problem.memberIds.count)
        for topic in problem.topics.indices {
            for (position, member) in problem.subscribers[topic].enumerated() {
                for partition in kept[topic][position] + given[topic][position] {
                    owned[member].append(TopicPartitionIndex(topic: topic, partition: partition))
                }
            }
        }
        return owned
    }
}
