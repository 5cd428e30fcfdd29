import ClusterMetadata
import KafkaProtocol

@testable import BrokerCore

/// The WAL writer as partition leaders see it: per stream, the highest epoch fenced and the appends
/// made durable in offset order. An append is taken only at or above the fenced epoch and only
/// where the stream ends, as the real writer does.
struct SimulatedWAL {
    struct Entry: Equatable {
        var append: UInt64
        var baseOffset: Int64
        var nextOffset: Int64
    }

    var fenced: [StreamID: LeaderEpoch] = [:]
    var entries: [StreamID: [Entry]] = [:]

    func end(_ stream: StreamID) -> Int64 { entries[stream]?.last?.nextOffset ?? 0 }

    /// The durable end, or nil when a newer epoch holds the stream.
    mutating func fence(_ stream: StreamID, epoch: LeaderEpoch) -> Int64? {
        if let current = fenced[stream], current > epoch { return nil }
        fenced[stream] = epoch
        return end(stream)
    }

    mutating func append(_ id: UInt64, stream: StreamID, epoch: LeaderEpoch, baseOffset: Int64, count: Int64) -> PartitionLeadership.AppendFailure? {
        if let current = fenced[stream], current > epoch {
            return .init(code: KafkaErrorCode.fencedLeaderEpoch.rawValue, message: "fenced at \(current)")
        }
        guard baseOffset == end(stream) else {
            return .init(code: KafkaErrorCode.offsetOutOfRange.rawValue, message: "stream ends at \(end(stream)), not \(baseOffset)")
        }
        fenced[stream] = epoch
        entries[stream, default: []].append(Entry(append: id, baseOffset: baseOffset, nextOffset: baseOffset + count))
        return nil
    }

    func holds(_ entry: Entry, in stream: StreamID) -> Bool {
        entries[stream]?.contains(entry) ?? false
    }
}
