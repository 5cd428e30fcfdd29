import ClusterMetadata
import DequeModule
import KafkaProtocol

/// Which partitions this broker leads and, for each, the order its appends become durable in: the
/// partition-leadership state machine behind `ReplicaManager`.
///
/// Pure: no I/O, clocks or tasks. Inputs are metadata images, the ends of take-overs and resyncs,
/// new appends and the WAL writer's answers; outputs are `Action`s the driver carries out (start a
/// take-over, answer an append, drop the log cache, ...).
///
/// Each leadership term is a `Lease`; anything addressed to an earlier lease (a take-over, a resync,
/// a WAL answer that arrives late) is ignored. Within a lease the appends form a queue in offset
/// order; an answer completes its append only once every earlier one is answered, so
/// acknowledgements and the high watermark move in offset order. A failed append fails every later
/// one of its generation (the writer refuses appends that do not continue the stream) and the
/// partition resyncs before it accepts more.
struct PartitionLeadership {
    /// One term of leadership of a partition on this broker.
    struct Lease: Hashable, Sendable {
        var key: PartitionKey
        var topicId: KafkaUUID
        var streamId: StreamID
        var epoch: LeaderEpoch
        /// Distinguishes two terms at the same epoch (a partition led, let go, led again).
        var serial: UInt64
    }

    enum Phase: Sendable {
        /// Taking over the tail: no appends yet.
        case recovering
        /// Accepting appends.
        case ready
        /// An append failed; learning the durable end again.
        case resyncing
    }

    /// An append on its way to the WAL writer.
    struct InFlight {
        var number: UInt64
        var generation: UInt64
        var baseOffset: Int64
        var nextOffset: Int64
        /// nil until answered; then nil inside for success, or the failure.
        var outcome: AppendFailure??
    }

    /// Why the WAL writer (or the append path) refused an append.
    struct AppendFailure: Error, Hashable, Sendable {
        var code: Int16
        var message: String
    }

    /// A partition led here.
    struct Led {
        var lease: Lease
        var phase = Phase.recovering
        /// Bumped whenever the queue is cut (resign, failure, ready again): answers of older generations are stale.
        var generation: UInt64 = 0
        var nextOffset: Int64 = 0
        var highWatermark: Int64 = 0
        var logStartOffset: Int64 = 0
        /// The offset the current leader epoch started at.
        var epochStartOffset: Int64 = 0
        var queue: Deque<InFlight> = []
        /// Numbers appends within the lease.
        var appendCounter: UInt64 = 0
    }

    /// What the driver must do.
    enum Action: Equatable {
        /// Take over the lease's stream (fence, recover the tail), then call `becameReady`.
        case takeOver(Lease)
        /// The lease ended: stop its take-over or resync, fail the listed appends with NOT_LEADER_OR_FOLLOWER,
        /// drop its cached batches and tell listeners it resigned.
        case resigned(Lease, failedAppends: [UInt64])
        /// The lease accepts writes from `endOffset` on (drop cached batches of the term before).
        case ready(Lease, endOffset: Int64)
        /// The append is durable: acknowledge it and cache its batches.
        case acknowledge(Lease, number: UInt64, baseOffset: Int64, nextOffset: Int64)
        /// The append failed with `code`.
        case fail(Lease, number: UInt64, code: Int16, message: String)
        /// The append path broke: drop the cached batches and the WAL connection, and learn the durable end
        /// again (`resynced`) unless `fenced` (a newer leader exists; the metadata will move the partition).
        case resync(Lease, fenced: Bool)
        /// The high watermark or the set of ready partitions changed: wake readers waiting for it.
        case wakeReaders
    }

    /// Why an append cannot be assigned offsets now.
    enum Refusal: Error, Equatable {
        /// Not led here (NOT_LEADER_OR_FOLLOWER, or UNKNOWN_TOPIC_OR_PARTITION when the metadata has no such partition).
        case notLed
        /// Led here but not accepting appends yet (taking over or resyncing).
        case notReady
        /// The record set holds no records.
        case empty
    }

    let nodeId: NodeID
    private(set) var led: [PartitionKey: Led] = [:]
    private var nextSerial: UInt64 = 0

    init(nodeId: NodeID) {
        self.nodeId = nodeId
    }

    // MARK: Leadership

    /// Brings the led partitions in line with `state`: a term starts for each partition newly led here (or
    /// led under another epoch or topic id), and ends for each partition no longer led here.
    mutating func apply(_ state: MetadataState) -> [Action] {
        var actions: [Action] = []
        var ledNow: Set<PartitionKey> = []
        for name in state.topicNames {
            guard let topic = state.topics[name] else { continue }
            for (index, record) in topic.partitions.enumerated() where record.leader == nodeId {
                let key = PartitionKey(topic: name, partition: Int32(index))
                ledNow.insert(key)
                if let current = led[key], current.lease.epoch == record.leaderEpoch, current.lease.topicId == topic.topicId {
                    if let stream = state.streams[record.streamId], stream.logStartOffset > current.logStartOffset {
                        led[key]?.logStartOffset = stream.logStartOffset
                    }
                    continue
                }
                if led[key] != nil { actions.append(resign(key)) }
                nextSerial &+= 1
                let lease = Lease(key: key, topicId: topic.topicId, streamId: record.streamId, epoch: record.leaderEpoch, serial: nextSerial)
                led[key] = Led(lease: lease)
                actions.append(.takeOver(lease))
            }
        }
        for key in led.keys.sorted() where !ledNow.contains(key) {
            actions.append(resign(key))
        }
        actions.append(.wakeReaders)
        return actions
    }

    /// Ends every term (shutdown).
    mutating func resignAll() -> [Action] {
        var actions = led.keys.sorted().map { resign($0) }
        actions.append(.wakeReaders)
        return actions
    }

    private mutating func resign(_ key: PartitionKey) -> Action {
        let ended = led.removeValue(forKey: key)!
        return .resigned(ended.lease, failedAppends: ended.queue.map(\.number))
    }

    /// The take-over of `lease` found the stream ending at `end`: it accepts writes from there.
    mutating func becameReady(_ lease: Lease, end: Int64, logStart: Int64) -> [Action] {
        guard var partition = led[lease.key], partition.lease == lease, partition.phase == .recovering else { return [] }
        partition.nextOffset = end
        partition.highWatermark = end
        partition.epochStartOffset = end
        partition.logStartOffset = max(logStart, partition.logStartOffset)
        partition.phase = .ready
        partition.generation &+= 1
        led[lease.key] = partition
        return [.ready(lease, endOffset: end), .wakeReaders]
    }

    /// A resync of `lease` learned that the stream's durable end is `end`: writes continue from there.
    mutating func resynced(_ lease: Lease, end: Int64) -> [Action] {
        guard var partition = led[lease.key], partition.lease == lease, partition.phase == .resyncing else { return [] }
        partition.nextOffset = max(end, partition.highWatermark)
        partition.highWatermark = max(partition.highWatermark, end)
        partition.generation &+= 1
        partition.phase = .ready
        led[lease.key] = partition
        return [.wakeReaders]
    }

    /// Moves a led partition's log start offset forward (DeleteRecords).
    mutating func raiseLogStart(_ key: PartitionKey, to offset: Int64) {
        if let current = led[key]?.logStartOffset, offset > current { led[key]?.logStartOffset = offset }
    }

    // MARK: Appends

    /// Where the next append of `key` would start, and under which lease: nothing changes until `assign`.
    func nextAppend(_ key: PartitionKey) throws(Refusal) -> (lease: Lease, baseOffset: Int64, number: UInt64) {
        guard let partition = led[key] else { throw .notLed }
        guard partition.phase == .ready else { throw .notReady }
        return (partition.lease, partition.nextOffset, partition.appendCounter &+ 1)
    }

    /// Assigns `count` offsets to the next append of `lease` and queues it; the caller sends it to the
    /// WAL writer tagged with the returned generation and base offset.
    mutating func assign(_ lease: Lease, count: Int64) throws(Refusal) -> (number: UInt64, generation: UInt64, baseOffset: Int64) {
        guard var partition = led[lease.key], partition.lease == lease else { throw .notLed }
        guard partition.phase == .ready else { throw .notReady }
        guard count > 0 else { throw .empty }
        let base = partition.nextOffset
        partition.appendCounter &+= 1
        partition.nextOffset = base + count
        partition.queue.append(
            InFlight(number: partition.appendCounter, generation: partition.generation, baseOffset: base, nextOffset: base + count, outcome: nil))
        led[lease.key] = partition
        return (partition.appendCounter, partition.generation, base)
    }

    /// The WAL writer answered the append of `lease` sent at `generation` from `baseOffset`: completes
    /// it and every later one already answered, in offset order.
    mutating func answered(_ lease: Lease, generation: UInt64, baseOffset: Int64, failure: AppendFailure?) -> [Action] {
        guard var partition = led[lease.key], partition.lease == lease,
              let index = partition.queue.firstIndex(where: { $0.generation == generation && $0.baseOffset == baseOffset })
        else { return [] }  // the term ended, or the queue was cut: already answered
        partition.queue[index].outcome = .some(failure)
        var actions: [Action] = []
        var advanced = false
        while let head = partition.queue.first, let outcome = head.outcome {
            partition.queue.removeFirst()
            if let failure = outcome {
                actions += Self.cut(&partition, at: head, failure)
                continue
            }
            partition.highWatermark = max(partition.highWatermark, head.nextOffset)
            actions.append(.acknowledge(lease, number: head.number, baseOffset: head.baseOffset, nextOffset: head.nextOffset))
            advanced = true
        }
        led[lease.key] = partition
        if advanced { actions.append(.wakeReaders) }
        return actions
    }

    /// `failed` failed: so does every later append of its generation, and the partition resyncs.
    private static func cut(_ partition: inout Led, at failed: InFlight, _ failure: AppendFailure) -> [Action] {
        let code: KafkaErrorCode
        switch failure.code {
        case KafkaErrorCode.messageTooLarge.rawValue: code = .messageTooLarge
        case KafkaErrorCode.invalidRequest.rawValue: code = .invalidRecord
        default: code = .notLeaderOrFollower
        }
        var actions: [Action] = [.fail(partition.lease, number: failed.number, code: code.rawValue, message: failure.message)]
        guard failed.generation == partition.generation else { return actions }
        for item in partition.queue {
            actions.append(.fail(partition.lease, number: item.number, code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "an earlier append failed"))
        }
        partition.queue.removeAll()
        partition.generation &+= 1
        partition.phase = .resyncing
        actions.append(.resync(partition.lease, fenced: failure.code == KafkaErrorCode.fencedLeaderEpoch.rawValue))
        return actions
    }

    // MARK: Reads

    /// The term and state of a partition led here.
    func partition(_ key: PartitionKey) -> Led? { led[key] }

    /// Number of partitions led here, and how many are ready.
    var counts: (led: Int, ready: Int) {
        (led.count, led.values.filter { $0.phase == .ready }.count)
    }
}
