import KafkaProtocol
import NIOCore

/// The stored form of a consumer group (record key type 2 of `__consumer_offsets`, see `GroupRecord`):
/// epochs, resolved subscription metadata and every member with its epochs, state, assignment,
/// partitions still to revoke and target. Timers are not stored; a coordinator that loads the group
/// restarts every session.
///
/// Value: `int16 version (0), int32 group epoch, int32 assignment epoch, uvarint topic count, topics
/// { name, uuid, int32 partitions }, uvarint member count, members { member id, nullable instance id,
/// nullable rack id, client id, client host, int32 rebalance timeout, uvarint name count, names,
/// nullable regex, nullable assignor, int32 epoch, int32 previous epoch, int8 state, assigned,
/// pending revocation, target, int8 classic (0/1) then for 1 `int32 session timeout, uvarint count,
/// protocols { name, bytes metadata }` }`; an assignment is `uvarint topic count, { uuid, uvarint count, int32
/// partitions }`. Strings are compact (length+1, 0 = null).
public struct ConsumerGroupRecordValue: Sendable, Hashable {
    public var groupEpoch: Int32
    public var assignmentEpoch: Int32
    public var topics: [TopicCatalog.Topic]
    public var members: [ConsumerGroupMember]
    public var targets: [String: MemberAssignment]

    static let version: Int16 = 0

    public init(_ group: ConsumerGroup) {
        groupEpoch = group.groupEpoch
        assignmentEpoch = group.assignmentEpoch
        topics = group.subscriptionMetadata.values.sorted { $0.name < $1.name }
        members = group.members.keys.sorted().compactMap { group.members[$0]?.persisted }
        targets = group.targetAssignment
    }

    func encode(into out: inout ByteBuffer) {
        out.writeKafkaInteger(Self.version)
        out.writeKafkaInteger(groupEpoch)
        out.writeKafkaInteger(assignmentEpoch)
        out.writeUnsignedVarint(UInt32(clamping: topics.count))
        for topic in topics {
            out.writeKafkaString(topic.name, compact: true)
            out.writeKafkaUUID(topic.id)
            out.writeKafkaInteger(topic.partitionCount)
        }
        out.writeUnsignedVarint(UInt32(clamping: members.count))
        for member in members {
            out.writeKafkaString(member.memberId, compact: true)
            out.writeKafkaString(member.instanceId, compact: true)
            out.writeKafkaString(member.rackId, compact: true)
            out.writeKafkaString(member.clientId, compact: true)
            out.writeKafkaString(member.clientHost, compact: true)
            out.writeKafkaInteger(member.rebalanceTimeoutMs)
            out.writeUnsignedVarint(UInt32(clamping: member.subscribedTopicNames.count))
            for name in member.subscribedTopicNames { out.writeKafkaString(name, compact: true) }
            out.writeKafkaString(member.subscribedTopicRegex, compact: true)
            out.writeKafkaString(member.serverAssignor, compact: true)
            out.writeKafkaInteger(member.memberEpoch)
            out.writeKafkaInteger(member.previousMemberEpoch)
            out.writeKafkaInteger(member.state.rawValue)
            Self.write(member.assigned, into: &out)
            Self.write(member.pendingRevocation, into: &out)
            Self.write(targets[member.memberId] ?? [:], into: &out)
            out.writeKafkaInteger(Int8(member.classic == nil ? 0 : 1))
            if let classic = member.classic {
                out.writeKafkaInteger(classic.sessionTimeoutMs)
                out.writeUnsignedVarint(UInt32(clamping: classic.protocols.count))
                for item in classic.protocols {
                    out.writeKafkaString(item.name, compact: true)
                    out.writeKafkaBytes(item.metadata, compact: true)
                }
            }
        }
    }

    static func write(_ assignment: MemberAssignment, into out: inout ByteBuffer) {
        let topics = assignment.keys.sorted { ($0.high, $0.low) < ($1.high, $1.low) }
        out.writeUnsignedVarint(UInt32(clamping: topics.count))
        for topic in topics {
            let partitions = (assignment[topic] ?? []).sorted()
            out.writeKafkaUUID(topic)
            out.writeUnsignedVarint(UInt32(clamping: partitions.count))
            for partition in partitions { out.writeKafkaInteger(partition) }
        }
    }

    /// Parses a value; nil for a version this code does not know.
    static func decode(_ buffer: inout ByteBuffer) throws(ProtocolError) -> ConsumerGroupRecordValue? {
        let version: Int16 = try buffer.readKafkaInteger()
        guard version == Self.version else { return nil }
        let groupEpoch: Int32 = try buffer.readKafkaInteger()
        let assignmentEpoch: Int32 = try buffer.readKafkaInteger()
        // A topic takes at least 21 bytes, a member at least 25: larger counts cannot be real.
        let topicCount = try count(&buffer, minimumSize: 21)
        var topics: [TopicCatalog.Topic] = []
        for _ in 0..<topicCount {
            let name = try required(&buffer)
            let id = try buffer.readKafkaUUID()
            let partitions: Int32 = try buffer.readKafkaInteger()
            topics.append(TopicCatalog.Topic(name: name, id: id, partitionCount: partitions))
        }
        let memberCount = try count(&buffer, minimumSize: 25)
        var members: [ConsumerGroupMember] = []
        var targets: [String: MemberAssignment] = [:]
        for _ in 0..<memberCount {
            let memberId = try required(&buffer)
            let instanceId = try buffer.readKafkaString(compact: true)
            let rackId = try buffer.readKafkaString(compact: true)
            let clientId = try required(&buffer)
            let clientHost = try required(&buffer)
            let rebalanceTimeout: Int32 = try buffer.readKafkaInteger()
            let nameCount = try count(&buffer, minimumSize: 1)
            var names: [String] = []
            for _ in 0..<nameCount { names.append(try required(&buffer)) }
            let regex = try buffer.readKafkaString(compact: true)
            let assignor = try buffer.readKafkaString(compact: true)
            let epoch: Int32 = try buffer.readKafkaInteger()
            let previous: Int32 = try buffer.readKafkaInteger()
            let rawState: Int8 = try buffer.readKafkaInteger()
            guard let state = ConsumerGroupMember.State(rawValue: rawState) else { throw .invalidLength(Int(rawState)) }
            let assigned = try readAssignment(&buffer)
            let pending = try readAssignment(&buffer)
            targets[memberId] = try readAssignment(&buffer)
            var classic: ConsumerGroupMember.ClassicProtocol?
            let hasClassic: Int8 = try buffer.readKafkaInteger()
            if hasClassic == 1 {
                let timeout: Int32 = try buffer.readKafkaInteger()
                var protocols: [GroupProtocol] = []
                for _ in 0..<(try count(&buffer, minimumSize: 2)) {
                    protocols.append(GroupProtocol(name: try required(&buffer), metadata: try buffer.readKafkaBytes(compact: true) ?? ByteBuffer()))
                }
                classic = .init(sessionTimeoutMs: timeout, protocols: protocols)
            }
            var member = ConsumerGroupMember(
                    memberId: memberId, instanceId: instanceId, rackId: rackId, clientId: clientId, clientHost: clientHost,
                    rebalanceTimeoutMs: rebalanceTimeout, subscribedTopicNames: names, subscribedTopicRegex: regex, serverAssignor: assignor,
                    memberEpoch: epoch, previousMemberEpoch: previous, state: state, assigned: assigned, pendingRevocation: pending)
            member.classic = classic
            members.append(member)
        }
        var value = ConsumerGroupRecordValue(groupEpoch: groupEpoch, assignmentEpoch: assignmentEpoch, topics: topics, members: members)
        value.targets = targets
        return value
    }

    init(groupEpoch: Int32, assignmentEpoch: Int32, topics: [TopicCatalog.Topic], members: [ConsumerGroupMember]) {
        self.groupEpoch = groupEpoch
        self.assignmentEpoch = assignmentEpoch
        self.topics = topics
        self.members = members
        self.targets = [:]
    }

    static func readAssignment(_ buffer: inout ByteBuffer) throws(ProtocolError) -> MemberAssignment {
        var out: MemberAssignment = [:]
        for _ in 0..<(try count(&buffer, minimumSize: 17)) {
            let topic = try buffer.readKafkaUUID()
            var partitions: Set<Int32> = []
            for _ in 0..<(try count(&buffer, minimumSize: 4)) { partitions.insert(try buffer.readKafkaInteger()) }
            out[topic] = partitions
        }
        return Assignments.normalized(out)
    }

    static func count(_ buffer: inout ByteBuffer, minimumSize: Int) throws(ProtocolError) -> Int {
        let count = Int(try buffer.readUnsignedVarint())
        guard count <= buffer.readableBytes / minimumSize else { throw .invalidLength(count) }
        return count
    }

    static func required(_ buffer: inout ByteBuffer) throws(ProtocolError) -> String {
        guard let string = try buffer.readKafkaString(compact: true) else { throw .invalidLength(-1) }
        return string
    }
}

extension ConsumerGroup {
    /// The group rebuilt from its stored form, sessions starting at `now`.
    public init(groupId: String, config: GroupConfig, loaded value: ConsumerGroupRecordValue, now: Int64) {
        self.init(groupId: groupId, config: config)
        groupEpoch = value.groupEpoch
        assignmentEpoch = value.assignmentEpoch
        for topic in value.topics { subscriptionMetadata[topic.name] = topic }
        for member in value.members {
            members[member.memberId] = member
            if let instanceId = member.instanceId { staticMembers[instanceId] = member.memberId }
            for partition in Assignments.partitions(Assignments.union(member.assigned, member.pendingRevocation)) {
                owners[partition] = member.memberId
            }
        }
        targetAssignment = value.targets.filter { members[$0.key] != nil }
        restartSessions(now: now)
    }
}
