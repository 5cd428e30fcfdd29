import ClusterMetadata
import KafkaProtocol
import NIOCore

/// The outcome of appending one partition's record set.
public struct AppendResult: Sendable, Hashable {
    public var errorCode: Int16
    public var errorMessage: String?
    public var baseOffset: Int64 = -1
    /// The broker time stamped into LogAppendTime batches, -1 for CreateTime.
    public var logAppendTime: Int64 = -1
    public var logStartOffset: Int64 = -1

    public static func failure(_ code: KafkaErrorCode, _ message: String? = nil) -> AppendResult {
        AppendResult(errorCode: code.rawValue, errorMessage: message)
    }
}

/// What a reader needs to know about a partition this broker leads.
public struct PartitionView: Sendable, Hashable {
    public var topicId: KafkaUUID
    public var streamId: StreamID
    public var leaderEpoch: LeaderEpoch
    public var highWatermark: Int64
    public var logEndOffset: Int64
    public var logStartOffset: Int64
    /// The offset the current leader epoch started at.
    public var epochStartOffset: Int64
    /// The WAL writer holding the stream's uncommitted tail.
    public var walWriter: NodeID
}

/// A change in what this broker leads, for services that keep state per led partition (the group coordinator).
public enum LeadershipEvent: Sendable, Hashable {
    /// This broker took over the partition at `epoch` and accepts writes from `endOffset` on.
    case ready(PartitionKey, epoch: LeaderEpoch, endOffset: Int64)
    /// This broker no longer leads the partition (at `epoch`).
    case resigned(PartitionKey, epoch: LeaderEpoch)
}

/// Why a partition cannot be served by this broker right now.
public enum PartitionUnavailable: Error, Sendable {
    /// Another broker leads it (or nobody does): NOT_LEADER_OR_FOLLOWER.
    case notLeader
    /// This broker leads it but is still taking over the tail: NOT_LEADER_OR_FOLLOWER too, which
    /// every client retries after refreshing metadata.
    case loading
    /// The topic or partition does not exist.
    case unknown
    /// Any other partition-level error.
    case coded(KafkaErrorCode)

    public var errorCode: KafkaErrorCode {
        switch self {
        case .notLeader, .loading: .notLeaderOrFollower
        case .unknown: .unknownTopicOrPartition
        case .coded(let code): code
        }
    }
}

extension ReplicaManager {
    /// One batch of a record set: where it starts in `records`, its offset count, and its producer fields.
    public struct BatchInfo: Sendable, Hashable {
        public var start: Int
        public var count: Int64
        /// -1 for batches of non-idempotent producers.
        public var producerId: Int64
        public var producerEpoch: Int16
        public var baseSequence: Int32

        public init(start: Int, count: Int64, producerId: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1) {
            self.start = start
            self.count = count
            self.producerId = producerId
            self.producerEpoch = producerEpoch
            self.baseSequence = baseSequence
        }

        var lastSequence: Int32 {
            let last = Int64(baseSequence) + count - 1
            return last > Int64(Int32.max) ? Int32(truncatingIfNeeded: last - Int64(Int32.max) - 1) : Int32(last)
        }
    }

    /// A record set ready to append: its batches checked, and where they start in `records`.
    public struct Append: Sendable {
        public var key: PartitionKey
        public var records: ByteBuffer
        public var batches: [BatchInfo]
        /// When set, every batch is switched to LogAppendTime with this time.
        public var logAppendTime: Int64?

        public init(key: PartitionKey, records: ByteBuffer, batches: [BatchInfo], logAppendTime: Int64?) {
            self.key = key
            self.records = records
            self.batches = batches
            self.logAppendTime = logAppendTime
        }

        /// Batches without producer ids (internal writers such as the group coordinator).
        public init(key: PartitionKey, records: ByteBuffer, batches: [(start: Int, count: Int64)], logAppendTime: Int64?) {
            self.init(key: key, records: records, batches: batches.map { BatchInfo(start: $0.start, count: $0.count) }, logAppendTime: logAppendTime)
        }
    }
}
