import KafkaProtocol
import NIOCore

/// The type of a control record (the int16 after the version in its key).
public struct ControlRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The int16 type id.
    public var rawValue: Int16
    /// Any type id, including ones this module does not name.
    public init(rawValue: Int16) { self.rawValue = rawValue }

    /// Transaction aborted.
    public static let abort = ControlRecordType(rawValue: 0)
    /// Transaction committed.
    public static let commit = ControlRecordType(rawValue: 1)
    /// KRaft leader change.
    public static let leaderChange = ControlRecordType(rawValue: 2)
    /// KRaft snapshot header.
    public static let snapshotHeader = ControlRecordType(rawValue: 3)
    /// KRaft snapshot footer.
    public static let snapshotFooter = ControlRecordType(rawValue: 4)
    /// KRaft version record.
    public static let kraftVersion = ControlRecordType(rawValue: 5)
    /// KRaft voters record.
    public static let kraftVoters = ControlRecordType(rawValue: 6)

    public var description: String {
        switch rawValue {
        case 0: "ABORT"
        case 1: "COMMIT"
        case 2: "LEADER_CHANGE"
        case 3: "SNAPSHOT_HEADER"
        case 4: "SNAPSHOT_FOOTER"
        case 5: "KRAFT_VERSION"
        case 6: "KRAFT_VOTERS"
        default: "UNKNOWN(\(rawValue))"
        }
    }
}

/// The key of a control record: version (0) and type.
public struct ControlRecordKey: Hashable, Sendable {
    /// Key schema version (0).
    public var version: Int16
    /// What the control record means.
    public var type: ControlRecordType

    /// A key with the given version and type.
    public init(version: Int16 = 0, type: ControlRecordType) {
        self.version = version
        self.type = type
    }

    /// Parses a control record's key; later versions may append fields, which are ignored.
    public init(parsing key: ByteBuffer?) throws(RecordBatchError) {
        guard var key, key.readableBytes >= 4,
            let version = key.readInteger(endianness: .big, as: Int16.self),
            let type = key.readInteger(endianness: .big, as: Int16.self)
        else {
            throw .invalidRecord("control record key must hold version and type")
        }
        guard version >= 0 else { throw .invalidRecord("control record key version \(version)") }
        self.init(version: version, type: ControlRecordType(rawValue: type))
    }

    /// The 4-byte encoding.
    public var encoded: ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 4)
        buffer.writeKafkaInteger(version)
        buffer.writeKafkaInteger(type.rawValue)
        return buffer
    }
}

/// The value of a COMMIT or ABORT control record.
public struct EndTransactionMarker: Hashable, Sendable {
    /// Value schema version (0).
    public var version: Int16
    /// Epoch of the transaction coordinator that wrote the marker.
    public var coordinatorEpoch: Int32

    /// A marker value with the given fields.
    public init(version: Int16 = 0, coordinatorEpoch: Int32) {
        self.version = version
        self.coordinatorEpoch = coordinatorEpoch
    }

    /// Parses a marker value; fields added by later versions are ignored.
    public init(parsing value: ByteBuffer?) throws(RecordBatchError) {
        guard var value, value.readableBytes >= 6,
            let version = value.readInteger(endianness: .big, as: Int16.self),
            let epoch = value.readInteger(endianness: .big, as: Int32.self)
        else {
            throw .invalidRecord("end transaction marker must hold version and coordinator epoch")
        }
        guard version >= 0 else { throw .invalidRecord("end transaction marker version \(version)") }
        self.init(version: version, coordinatorEpoch: epoch)
    }

    /// The 6-byte encoding.
    public var encoded: ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 6)
        buffer.writeKafkaInteger(version)
        buffer.writeKafkaInteger(coordinatorEpoch)
        return buffer
    }
}

extension Record {
    /// The control key of a record from a control batch.
    public func controlKey() throws(RecordBatchError) -> ControlRecordKey {
        try ControlRecordKey(parsing: key)
    }
}

extension RecordBatch {
    /// The control type of a control batch's (single) record, or nil for data batches.
    public func controlType(maxUncompressedBytes: Int = 1 << 20) throws(RecordBatchError) -> ControlRecordType? {
        guard isControl else { return nil }
        guard let first = try records(maxUncompressedBytes: maxUncompressedBytes).first else {
            throw .invalidRecord("control batch without records")
        }
        return try first.controlKey().type
    }
}

extension RecordBatchBuilder {
    /// A COMMIT or ABORT marker batch as the transaction coordinator writes it: transactional
    /// and control bits set, the producer's id and epoch, no sequence, one uncompressed record.
    public static func endTransactionMarker(
        _ type: ControlRecordType, producerId: Int64, producerEpoch: Int16, coordinatorEpoch: Int32,
        timestamp: Int64, baseOffset: Int64 = 0, partitionLeaderEpoch: Int32 = -1
    ) throws(RecordBatchError) -> RecordBatch {
        guard type == .commit || type == .abort else {
            throw .invalidRecord("\(type) is not a transaction marker")
        }
        var builder = RecordBatchBuilder(
            codec: .none, baseOffset: baseOffset, partitionLeaderEpoch: partitionLeaderEpoch, producerId: producerId,
            producerEpoch: producerEpoch, baseSequence: -1, isTransactional: true, isControl: true,
            baseTimestamp: timestamp)
        try builder.append(
            timestamp: timestamp, key: ControlRecordKey(type: type).encoded,
            value: EndTransactionMarker(coordinatorEpoch: coordinatorEpoch).encoded)
        return try builder.build()
    }
}
