import KafkaProtocol

/// A topic's partitions assigned to one member: topic id -> partition numbers.
public typealias MemberAssignment = [KafkaUUID: Set<Int32>]

/// What a server-side assignor sees of the group.
public struct AssignmentSpec: Sendable, Hashable {
    /// One member of the group as the assignor sees it.
    public struct Member: Sendable, Hashable {
        /// The member's id; unique within the group.
        public var memberId: String
        /// The static membership id, if any.
        public var instanceId: String?
        /// The member's rack, if it reported one.
        public var rackId: String?
        /// Topic ids the member subscribes to that exist (already resolved from names / regex).
        public var subscribedTopicIds: Set<KafkaUUID>
        /// The member's current target assignment (for stickiness); may mention topics or partitions that no longer exist or that the member no longer subscribes to.
        public var currentAssignment: MemberAssignment

        /// A member; by default without instance id, rack or current assignment.
        public init(
            memberId: String, instanceId: String? = nil, rackId: String? = nil, subscribedTopicIds: Set<KafkaUUID>,
            currentAssignment: MemberAssignment = [:]
        ) {
            self.memberId = memberId
            self.instanceId = instanceId
            self.rackId = rackId
            self.subscribedTopicIds = subscribedTopicIds
            self.currentAssignment = currentAssignment
        }
    }

    /// In any order; the assignor must sort (by memberId) itself.
    public var members: [Member]
    /// Partition count of every topic any member subscribes to.
    public var partitionCounts: [KafkaUUID: Int32]

    /// A spec from its members and the partition counts of their topics.
    public init(members: [Member], partitionCounts: [KafkaUUID: Int32]) {
        self.members = members
        self.partitionCounts = partitionCounts
    }
}

/// A server-side assignor (KIP-848 `ServerAssignor` names): a pure function of the spec.
public protocol ServerAssignor: Sendable {
    /// The name members ask for in `ServerAssignor` and the broker lists in `group.consumer.assignors`.
    var name: String { get }
    /// A target assignment for every member of the spec (every member id appears as a key, possibly with an empty assignment).
    func assign(_ spec: AssignmentSpec) -> [String: MemberAssignment]
}

/// The server-side assignors the broker offers.
public enum ServerAssignors {
    /// The default, as in Kafka ("uniform").
    public static let defaultName = "uniform"
    /// Every assignor, the default first.
    public static let all: [any ServerAssignor] = [UniformAssignor(), RangeAssignor()]

    /// The assignor called `name`, or nil when there is none.
    public static func named(_ name: String) -> (any ServerAssignor)? {
        all.first { $0.name == name }
    }
}

/// A spec reduced to dense indices in a canonical order, so assignors never depend on input or
/// `Dictionary` order: members sorted by id, topics by uuid, partitions by number.
struct AssignmentProblem {
    /// Member ids, sorted; a member's index is its position here.
    let memberIds: [String]
    /// Topics someone subscribes to that have partitions, sorted by uuid.
    let topics: [KafkaUUID]
    /// Partition count per topic index.
    let partitionCounts: [Int]
    /// Topic indices each member subscribes to, ascending.
    let subscriptions: [[Int]]
    /// Member indices subscribed to each topic, ascending.
    let subscribers: [[Int]]
    /// Per member, the partitions of its current assignment that it may keep (the topic exists, is
    /// subscribed, the partition is in range), sorted by topic then partition.
    let current: [[TopicPartitionIndex]]

    init(_ spec: AssignmentSpec) {
        // Duplicate member ids are merged by union, which does not depend on their order.
        var merged: [String: (topics: Set<KafkaUUID>, current: MemberAssignment)] = [:]
        for member in spec.members {
            var entry = merged[member.memberId] ?? ([], [:])
            entry.topics.formUnion(member.subscribedTopicIds)
            entry.current.merge(member.currentAssignment) { $0.union($1) }
            merged[member.memberId] = entry
        }
        memberIds = merged.keys.sorted()
        let entries = memberIds.map { merged[$0]! }

        var topicSet = Set<KafkaUUID>()
        for entry in entries { topicSet.formUnion(entry.topics) }
        topics = topicSet.filter { (spec.partitionCounts[$0] ?? 0) > 0 }.sorted(by: KafkaUUID.precedes)
        partitionCounts = topics.map { Int(spec.partitionCounts[$0]!) }
        var index: [KafkaUUID: Int] = [:]
        for (position, topic) in topics.enumerated() { index[topic] = position }

        subscriptions = entries.map { entry in entry.topics.compactMap { index[$0] }.sorted() }
        var subscribers = [[Int]](repeating: [], count: topics.count)
        for (member, topicIndices) in subscriptions.enumerated() {
            for topic in topicIndices { subscribers[topic].append(member) }
        }
        self.subscribers = subscribers

        let counts = partitionCounts
        current = entries.map { entry in
            var kept: [TopicPartitionIndex] = []
            for (topic, partitions) in entry.current {
                guard let position = index[topic], entry.topics.contains(topic) else { continue }
                for partition in partitions where partition >= 0 && Int(partition) < counts[position] {
                    kept.append(TopicPartitionIndex(topic: position, partition: partition))
                }
            }
            return kept.sorted()
        }
    }

    /// The result map from per-member lists of partitions: every member id present.
    func result(_ owned: [[TopicPartitionIndex]]) -> [String: MemberAssignment] {
        var result: [String: MemberAssignment] = [:]
        for (member, id) in memberIds.enumerated() {
            var assignment: MemberAssignment = [:]
            for item in owned[member] { assignment[topics[item.topic], default: []].insert(item.partition) }
            result[id] = assignment
        }
        return result
    }
}

/// A partition named by its topic's index in an `AssignmentProblem`.
struct TopicPartitionIndex: Hashable, Comparable {
    var topic: Int
    var partition: Int32

    static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition)
    }
}

extension KafkaUUID {
    /// A total order on uuids (by the high word, then the low), for canonical topic order.
    static func precedes(_ lhs: KafkaUUID, _ rhs: KafkaUUID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }
}

/// A binary min-heap of `(key, tie)` pairs, ordered by key then tie, so equal keys pop in a fixed order.
struct PairHeap {
    private var items: [(Int, Int)] = []

    init(_ elements: [(Int, Int)] = []) {
        items = elements.sorted { $0 < $1 }  // a sorted array is already a heap
    }

    var isEmpty: Bool { items.isEmpty }

    mutating func push(_ element: (Int, Int)) {
        items.append(element)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (Int, Int)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count, items[left] < items[smallest] { smallest = left }
                if right < items.count, items[right] < items[smallest] { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
