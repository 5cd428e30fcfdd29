import ClusterMetadata
import KafkaProtocol

/// Reads of partitions led from another zone (zone routing, DESIGN §6): this broker serves their
/// committed data from object storage, so a consumer never pulls the leader's bytes across zones.
/// Its high watermark is the stream's committed end, which trails the leader's by the WAL upload
/// interval; a fetch beyond it waits (answers empty) instead of failing, since the leader has the data.
enum ZoneReads {
    /// The view of `key` this broker serves: its own when it leads it, else (with zone routing, for a
    /// partition led from another zone) the committed data's; `true` for the latter.
    static func view(_ key: PartitionKey, context: BrokerContext) async throws(PartitionUnavailable) -> (view: PartitionView, committedOnly: Bool) {
        do {
            return (try await context.replicas.view(key), false)
        } catch .notLeader where context.settings.zoneRouting {
            guard let view = committedView(key, state: context.replicas.latestState, zone: context.settings.zone) else { throw .notLeader }
            return (view, true)
        } catch {
            throw error
        }
    }

    /// The committed data's view of a partition whose active leader is in a zone other than `zone`.
    static func committedView(_ key: PartitionKey, state: MetadataState, zone: String) -> PartitionView? {
        guard let partition = state.partition(key), let leader = state.nodes[partition.leader], leader.state == .active,
              leader.zone != zone, let stream = state.streams[partition.streamId], let topic = state.topics[key.topic]
        else { return nil }
        return PartitionView(
            topicId: topic.topicId, streamId: stream.id, leaderEpoch: partition.leaderEpoch, highWatermark: stream.committedEnd,
            logEndOffset: stream.committedEnd, logStartOffset: stream.startOffset, epochStartOffset: stream.startOffset, walWriter: -1)
    }

    /// KIP-392: the broker a consumer in `rack` should fetch `key` from instead of this leader, when
    /// zone routing is on and `rack` names another zone with active brokers; nil to serve it here.
    static func preferredReadReplica(_ key: PartitionKey, rack: String?, context: BrokerContext) -> NodeID? {
        guard context.settings.zoneRouting, let rack, !rack.isEmpty, rack != context.settings.zone else { return nil }
        let state = context.replicas.latestState
        guard !state.activeBrokers(inZone: rack).isEmpty, let replica = state.zoneLeader(of: key, zone: rack),
              replica != context.settings.nodeId
        else { return nil }
        return replica
    }
}
