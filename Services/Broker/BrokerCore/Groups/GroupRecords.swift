import KafkaProtocol
import KafkaRecords
import NIOCore

/// A group's metadata as stored in `__consumer_offsets`: enough for a new coordinator to rebuild the
/// group after fail-over (members keep their ids, generation and assignment).
public struct GroupMetadataValue: Sendable, Hashable {
    public struct Member: Sendable, Hashable {
        public var memberId: String
        public var groupInstanceId: String?
        public var clientId: String
        public var clientHost: String
        public var rebalanceTimeoutMs: Int32
        public var sessionTimeoutMs: Int32
        /// The member's metadata for the chosen protocol.
        public var subscription: ByteBuffer
        public var assignment: ByteBuffer
    }

    public var protocolType: String?
    public var generationId: Int32
    public var protocolName: String?
    public var leaderId: String?
    public var stateTimestamp: Int64
    public var members: [Member]
}

/// One record of `__consumer_offsets`, in Floe's own compact format (not Kafka's, which nothing
/// outside the coordinator reads). All strings and byte strings are compact (unsigned varint of
/// length+1, 0 = null), integers big-endian.
///
/// Key: `int16 type` then, for type 0 (offset) `group, topic, int32 partition`; for type 1 (classic
/// group metadata) and type 2 (consumer group, `ConsumerGroupRecordValue`) `group`.
/// Value (null = tombstone, the key's entry is deleted): `int16 version (0)` then, for an offset,
/// `int64 offset, int32 leader epoch, nullable metadata, int64 commit timestamp`; for group metadata,
/// `nullable protocol type, int32 generation, nullable protocol name, nullable leader, int64 state
/// timestamp, uvarint member count, members { member id, nullable instance id, client id, client host,
/// int32 rebalance timeout, int32 session timeout, bytes subscription, bytes assignment }`.
/// Unknown key types and value versions are skipped on load, so the format can grow.
public enum GroupRecord: Sendable, Hashable {
    case offset(group: String, key: OffsetKey, value: CommittedOffset?)
    case metadata(group: String, value: GroupMetadataValue?)
    case consumerGroup(group: String, value: ConsumerGroupRecordValue?)

    static let offsetKeyType: Int16 = 0
    static let metadataKeyType: Int16 = 1
    static let consumerGroupKeyType: Int16 = 2
    static let valueVersion: Int16 = 0

    /// The group the record belongs to.
    public var groupId: String {
        switch self {
        case .offset(let group, _, _), .metadata(let group, _), .consumerGroup(let group, _): group
        }
    }

    /// The record's key and value (nil for a tombstone).
    public func encoded() -> (key: ByteBuffer, value: ByteBuffer?) {
        var key = ByteBuffer()
        switch self {
        case .offset(let group, let partition, let value):
            key.writeKafkaInteger(Self.offsetKeyType)
            key.writeKafkaString(group, compact: true)
            key.writeKafkaString(partition.topic, compact: true)
            key.writeKafkaInteger(partition.partition)
            guard let value else { return (key, nil) }
            var out = ByteBuffer()
            out.writeKafkaInteger(Self.valueVersion)
            out.writeKafkaInteger(value.offset)
            out.writeKafkaInteger(value.leaderEpoch)
            out.writeKafkaString(value.metadata, compact: true)
            out.writeKafkaInteger(value.commitTimestamp)
            return (key, out)
        case .metadata(let group, let value):
            key.writeKafkaInteger(Self.metadataKeyType)
            key.writeKafkaString(group, compact: true)
            guard let value else { return (key, nil) }
            var out = ByteBuffer()
            out.writeKafkaInteger(Self.valueVersion)
            out.writeKafkaString(value.protocolType, compact: true)
            out.writeKafkaInteger(value.generationId)
            out.writeKafkaString(value.protocolName, compact: true)
            out.writeKafkaString(value.leaderId, compact: true)
            out.writeKafkaInteger(value.stateTimestamp)
            out.writeUnsignedVarint(UInt32(clamping: value.members.count))
            for member in value.members {
                out.writeKafkaString(member.memberId, compact: true)
                out.writeKafkaString(member.groupInstanceId, compact: true)
                out.writeKafkaString(member.clientId, compact: true)
                out.writeKafkaString(member.clientHost, compact: true)
                out.writeKafkaInteger(member.rebalanceTimeoutMs)
                out.writeKafkaInteger(member.sessionTimeoutMs)
                out.writeKafkaBytes(member.subscription, compact: true)
                out.writeKafkaBytes(member.assignment, compact: true)
            }
            return (key, out)
        case .consumerGroup(let group, let value):
            key.writeKafkaInteger(Self.consumerGroupKeyType)
            key.writeKafkaString(group, compact: true)
            guard let value else { return (key, nil) }
            var out = ByteBuffer()
            value.encode(into: &out)
            return (key, out)
        }
    }

    /// Parses a record; nil for a key type or value version this code does not know.
    public static func decode(key: ByteBuffer?, value: ByteBuffer?) throws(ProtocolError) -> GroupRecord? {
        guard var key else { throw .invalidLength(-1) }
        let type: Int16 = try key.readKafkaInteger()
        switch type {
        case offsetKeyType:
            let group = try requiredString(&key)
            let topic = try requiredString(&key)
            let partition: Int32 = try key.readKafkaInteger()
            let offsetKey = OffsetKey(topic: topic, partition: partition)
            guard var value else { return .offset(group: group, key: offsetKey, value: nil) }
            let version: Int16 = try value.readKafkaInteger()
            guard version == valueVersion else { return nil }
            let offset: Int64 = try value.readKafkaInteger()
            let epoch: Int32 = try value.readKafkaInteger()
            let metadata = try value.readKafkaString(compact: true)
            let timestamp: Int64 = try value.readKafkaInteger()
            return .offset(group: group, key: offsetKey, value: CommittedOffset(offset: offset, leaderEpoch: epoch, metadata: metadata, commitTimestamp: timestamp))
        case metadataKeyType:
            let group = try requiredString(&key)
            guard var value else { return .metadata(group: group, value: nil) }
            let version: Int16 = try value.readKafkaInteger()
            guard version == valueVersion else { return nil }
            let protocolType = try value.readKafkaString(compact: true)
            let generation: Int32 = try value.readKafkaInteger()
            let protocolName = try value.readKafkaString(compact: true)
            let leader = try value.readKafkaString(compact: true)
            let timestamp: Int64 = try value.readKafkaInteger()
            let count = Int(try value.readUnsignedVarint())
            // Each member takes at least 14 bytes; a larger count cannot be real.
            guard count <= value.readableBytes / 14 else { throw .invalidLength(count) }
            var members: [GroupMetadataValue.Member] = []
            members.reserveCapacity(count)
            for _ in 0..<count {
                let memberId = try requiredString(&value)
                let instanceId = try value.readKafkaString(compact: true)
                let clientId = try requiredString(&value)
                let clientHost = try requiredString(&value)
                let rebalanceTimeout: Int32 = try value.readKafkaInteger()
                let sessionTimeout: Int32 = try value.readKafkaInteger()
                let subscription = try value.readKafkaBytes(compact: true) ?? ByteBuffer()
                let assignment = try value.readKafkaBytes(compact: true) ?? ByteBuffer()
                members.append(
                    GroupMetadataValue.Member(
                        memberId: memberId, groupInstanceId: instanceId, clientId: clientId, clientHost: clientHost,
                        rebalanceTimeoutMs: rebalanceTimeout, sessionTimeoutMs: sessionTimeout, subscription: subscription, assignment: assignment))
            }
            return .metadata(
                group: group,
                value: GroupMetadataValue(
                    protocolType: protocolType, generationId: generation, protocolName: protocolName, leaderId: leader,
                    stateTimestamp: timestamp, members: members))
        case consumerGroupKeyType:
            let group = try requiredString(&key)
            guard var value else { return .consumerGroup(group: group, value: nil) }
            guard let parsed = try ConsumerGroupRecordValue.decode(&value) else { return nil }
            return .consumerGroup(group: group, value: parsed)
        default:
            return nil
        }
    }

    private static func requiredString(_ buffer: inout ByteBuffer) throws(ProtocolError) -> String {
        guard let string = try buffer.readKafkaString(compact: true) else { throw .invalidLength(-1) }
        return string
    }

    /// One batch holding `records`, ready for `ReplicaManager.enqueue`.
    static func batch(_ records: [GroupRecord], now: Int64) throws(RecordBatchError) -> RecordBatch {
        var builder = RecordBatchBuilder(baseTimestamp: now)
        for record in records {
            let (key, value) = record.encoded()
            try builder.append(timestamp: now, key: key, value: value)
        }
        return try builder.build()
    }
}

/// Rebuilds the groups of one `__consumer_offsets` partition from its records, in log order: the
/// last record of each key wins, a tombstone deletes.
public struct GroupReplay: Sendable {
    struct Entry {
        var metadata: GroupMetadataValue?
        var consumer: ConsumerGroupRecordValue?
        var offsets: [OffsetKey: CommittedOffset] = [:]
        var positions: [OffsetKey: Int64] = [:]
    }

    var entries: [String: Entry] = [:]
    /// Records that could not be parsed (skipped).
    public private(set) var corruptRecords = 0

    public init() {}

    /// Applies one record found at `position`.
    public mutating func apply(_ record: GroupRecord, position: Int64) {
        switch record {
        case .offset(let group, let key, let value):
            entries[group, default: Entry()].offsets[key] = value
            entries[group, default: Entry()].positions[key] = position
        case .metadata(let group, let value):
            entries[group, default: Entry()].metadata = value
        case .consumerGroup(let group, let value):
            entries[group, default: Entry()].consumer = value
        }
    }

    /// Applies every record of `batch` (control batches carry no group records).
    public mutating func apply(batch: RecordBatch) {
        guard !batch.isControl, let records = try? batch.records(maxUncompressedBytes: 64 << 20) else {
            if !batch.isControl { corruptRecords += 1 }
            return
        }
        for record in records {
            do {
                if let parsed = try GroupRecord.decode(key: record.key, value: record.value) {
                    apply(parsed, position: record.offset(in: batch.header))
                }
            } catch {
                corruptRecords += 1
            }
        }
    }

    /// The rebuilt groups, sessions starting at `now`. Groups with neither metadata nor offsets are gone.
    public func groups(config: GroupConfig, now: Int64) -> [String: ClassicGroup] {
        var out: [String: ClassicGroup] = [:]
        for (groupId, entry) in entries where entry.metadata != nil || entry.consumer != nil || !entry.offsets.isEmpty {
            var group = ClassicGroup(groupId: groupId, config: config, loaded: entry.metadata, offsets: entry.offsets, now: now)
            group.offsetPositions = entry.positions.filter { entry.offsets[$0.key] != nil }
            out[groupId] = group
        }
        return out
    }

    /// The rebuilt consumer groups (KIP-848), sessions starting at `now`.
    public func consumerGroups(config: GroupConfig, now: Int64) -> [String: ConsumerGroup] {
        var out: [String: ConsumerGroup] = [:]
        for (groupId, entry) in entries {
            guard let value = entry.consumer else { continue }
            out[groupId] = ConsumerGroup(groupId: groupId, config: config, loaded: value, now: now)
        }
        return out
    }
}
