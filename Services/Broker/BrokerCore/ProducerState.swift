import KafkaProtocol
import KafkaRecords

/// Idempotent-producer state of one partition: per producer id, its epoch and the metadata of its
/// last five batches, as Kafka keeps it. Used to refuse out-of-order and fenced batches and to
/// answer a retried batch with its original offset instead of appending it twice.
struct ProducerStateTable {
    /// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound for idempotence).
    static let rememberedBatches = 5

    struct BatchMetadata: Equatable {
        var firstSequence: Int32
        var lastSequence: Int32
        var baseOffset: Int64
        var lastOffset: Int64
        /// Which append (ReplicaManager's sequence number) wrote it, so a duplicate can wait for it.
        var append: UInt64
    }

    struct Entry: Equatable {
        var epoch: Int16
        var batches: [BatchMetadata] = []
        /// Broker wall-clock time (ms) of its last batch, for expiry.
        var lastSeen: Int64 = 0
        var lastSequence: Int32? { batches.last?.lastSequence }
    }

    enum Verdict: Equatable {
        /// Append it.
        case append
        /// Already written by append `append` at `baseOffset`: answer with that.
        case duplicate(BatchMetadata)
        case reject(KafkaErrorCode, String)
    }

    private(set) var producers: [Int64: Entry] = [:]

    /// Kafka's sequence arithmetic: sequences wrap from Int32.max to 0.
    static func follows(_ next: Int32, _ last: Int32) -> Bool {
        last == Int32.max ? next == 0 : next == last &+ 1
    }

    /// What to do with a batch of producer `id`, before it is appended.
    func check(id: Int64, epoch: Int16, firstSequence: Int32, lastSequence: Int32) -> Verdict {
        guard id >= 0 else { return .append }
        guard let entry = producers[id] else {
            // Unknown producer (new, or its state is older than what was rebuilt): accept, as Kafka does.
            return .append
        }
        if epoch < entry.epoch {
            return .reject(.invalidProducerEpoch, "producer \(id) epoch \(epoch) is older than \(entry.epoch)")
        }
        if epoch > entry.epoch {
            return firstSequence == 0
                ? .append
                : .reject(.outOfOrderSequenceNumber, "producer \(id) new epoch \(epoch) must start at sequence 0, got \(firstSequence)")
        }
        if let match = entry.batches.first(where: { $0.firstSequence == firstSequence && $0.lastSequence == lastSequence }) {
            return .duplicate(match)
        }
        guard let last = entry.lastSequence else { return .append }
        guard Self.follows(firstSequence, last) else {
            // A batch ahead of the next expected one is normal after an earlier in-flight batch
            // failed (its retry is on the way). Kafka answers OUT_OF_ORDER_SEQUENCE_NUMBER, on
            // which librdkafka bumps the producer epoch and resends the unacknowledged messages
            // under new sequences — duplicates no broker can detect. A retriable "not leader"
            // makes every client retry in sequence order instead.
            return .reject(.notLeaderOrFollower, "producer \(id) expected sequence \(last == Int32.max ? 0 : last &+ 1), got \(firstSequence); retry the earlier batches first")
        }
        return .append
    }

    /// Records an appended (or recovered) batch at broker wall-clock time `now` (ms). Mutates the
    /// entry in place: the produce path records every idempotent batch, so it must not copy the table.
    mutating func record(id: Int64, epoch: Int16, batch: BatchMetadata, now: Int64) {
        guard id >= 0 else { return }
        if let current = producers[id]?.epoch {
            if epoch < current { return }
            if epoch > current { producers[id] = Entry(epoch: epoch) }
        }
        producers[id, default: Entry(epoch: epoch)].remember(batch, now: now)
    }

    /// Forgets producers whose last batch was recorded before `cutoff` (ms), as Kafka does after
    /// `producer.id.expiration.ms`: a retry from one of them is then treated as a new producer.
    /// Returns how many were forgotten.
    @discardableResult
    mutating func expire(before cutoff: Int64) -> Int {
        let before = producers.count
        producers = producers.filter { $0.value.lastSeen >= cutoff }
        return before - producers.count
    }

    var count: Int { producers.count }

    /// Rebuilds state from durable batches in offset order (a new leader's or a resync's tail scan).
    /// Replayed producers count as seen at `now`, so a leadership change never expires one early.
    mutating func replay(_ batch: RecordBatch, now: Int64) {
        guard batch.producerId >= 0, !batch.isControl else { return }
        record(
            id: batch.producerId, epoch: batch.producerEpoch,
            batch: BatchMetadata(
                firstSequence: batch.baseSequence, lastSequence: batch.lastSequence, baseOffset: batch.baseOffset,
                lastOffset: batch.lastOffset, append: 0),
            now: now)
    }
}

extension ProducerStateTable.Entry {
    fileprivate mutating func remember(_ batch: ProducerStateTable.BatchMetadata, now: Int64) {
        batches.append(batch)
        if batches.count > ProducerStateTable.rememberedBatches { batches.removeFirst(batches.count - ProducerStateTable.rememberedBatches) }
        lastSeen = max(lastSeen, now)
    }
}
