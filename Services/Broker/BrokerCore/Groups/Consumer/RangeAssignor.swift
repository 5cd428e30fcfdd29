/// The server-side range assignor: per topic, the subscribers sorted by member id take
/// contiguous ranges of partitions, the first `count % subscribers` one partition more than the
/// rest.
///
/// The ranges depend only on a topic's partition count and its set of subscribers, so topics
/// with the same count and the same subscribers line up partition by partition (co-partitioning:
/// a member reading partition 3 of one reads partition 3 of the other). It ignores current
/// assignments on purpose: keeping an old range would break that alignment.
public struct RangeAssignor: ServerAssignor {
    /// "range", as in Kafka.
    public let name = "range"

    /// The assignor; it has no settings.
    public init() {}

    /// Contiguous ranges of every subscribed topic for every member of `spec`.
    public func assign(_ spec: AssignmentSpec) -> [String: MemberAssignment] {
        let problem = AssignmentProblem(spec)
        var owned = [[TopicPartitionIndex]](repeating: [], count: problem.memberIds.count)
        for (topic, subscribers) in problem.subscribers.enumerated() where !subscribers.isEmpty {
            for (position, range) in Self.ranges(count: problem.partitionCounts[topic], members: subscribers.count).enumerated() {
                owned[subscribers[position]] += range.map { TopicPartitionIndex(topic: topic, partition: Int32($0)) }
            }
        }
        return problem.result(owned)
    }

    /// The range of partition numbers each of `members` subscribers takes from `count` partitions.
    static func ranges(count: Int, members: Int) -> [Range<Int>] {
        let base = count / members, extra = count % members
        return (0..<members).map { position in
            let start = position * base + min(position, extra)
            return start..<(start + base + (position < extra ? 1 : 0))
        }
    }
}
