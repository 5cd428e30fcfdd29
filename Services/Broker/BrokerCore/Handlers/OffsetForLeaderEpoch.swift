import ClusterMetadata
import KafkaProtocol

/// OffsetForLeaderEpoch: where a leader epoch ended, so consumers can detect log truncation. Floe
/// never truncates acknowledged data, so for an older epoch the answer is where the current epoch
/// began (never below the true end, so no client truncates wrongly).
enum OffsetForLeaderEpoch {
    static func handle(_ request: OffsetForLeaderEpochRequest, version: Int16, context: BrokerContext) async -> OffsetForLeaderEpochResponse {
        var response = await answer(request, context: context)
        await forwardCommittedOnly(request, version: version, into: &response, context: context)
        return response
    }

    /// With zone routing, partitions led from another zone are answered by their leader (a small
    /// control call): only it knows where the current epoch ends, and an end below a consumer's
    /// position would make the client truncate.
    static func forwardCommittedOnly(
        _ request: OffsetForLeaderEpochRequest, version: Int16, into response: inout OffsetForLeaderEpochResponse, context: BrokerContext
    ) async {
        guard let router = context.router else { return }
        let state = context.replicas.latestState
        var byLeader: [NodeID: OffsetForLeaderEpochRequest] = [:]
        for (t, topic) in response.topics.enumerated() {
            for (p, answer) in topic.partitions.enumerated() where answer.errorCode == KafkaErrorCode.notLeaderOrFollower.rawValue {
                let key = PartitionKey(topic: topic.topic, partition: answer.partition)
                guard ZoneReads.committedView(key, state: state, zone: context.settings.zone) != nil, let leader = state.partition(key)?.leader,
                      t < request.topics.count, p < request.topics[t].partitions.count
                else { continue }
                let asked = request.topics[t].partitions[p]
                var forward = byLeader[leader] ?? { var r = OffsetForLeaderEpochRequest(); r.replicaId = request.replicaId; return r }()
                if let last = forward.topics.indices.last, forward.topics[last].topic == topic.topic {
                    forward.topics[last].partitions.append(asked)
                } else {
                    var entry = OffsetForLeaderEpochRequest.OffsetForLeaderTopic()
                    entry.topic = topic.topic
                    entry.partitions = [asked]
                    forward.topics.append(entry)
                }
                byLeader[leader] = forward
            }
        }
        for (leader, forward) in byLeader {
            guard let answered = try? await router.call(forward, version: version, leader: leader) else { continue }
            for topic in answered.topics {
                guard let t = response.topics.firstIndex(where: { $0.topic == topic.topic }) else { continue }
                for partition in topic.partitions {
                    if let p = response.topics[t].partitions.firstIndex(where: { $0.partition == partition.partition }) {
                        response.topics[t].partitions[p] = partition
                    }
                }
            }
        }
    }

    static func answer(_ request: OffsetForLeaderEpochRequest, context: BrokerContext) async -> OffsetForLeaderEpochResponse {
        var response = OffsetForLeaderEpochResponse()
        for topic in request.topics {
            var out = OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult()
            out.topic = topic.topic
            for partition in topic.partitions {
                var answer = OffsetForLeaderEpochResponse.EpochEndOffset()
                answer.partition = partition.partition
                answer.leaderEpoch = -1
                answer.endOffset = -1
                do throws(PartitionUnavailable) {
                    let view = try await context.replicas.view(PartitionKey(topic: topic.topic, partition: partition.partition))
                    if let code = Fetch.epochError(requested: partition.currentLeaderEpoch, current: view.leaderEpoch) {
                        throw .coded(code)
                    }
                    if partition.leaderEpoch == view.leaderEpoch {
                        answer.leaderEpoch = view.leaderEpoch
                        answer.endOffset = view.logEndOffset
                    } else if partition.leaderEpoch < view.leaderEpoch && partition.leaderEpoch >= 0 {
                        answer.leaderEpoch = partition.leaderEpoch
                        answer.endOffset = view.epochStartOffset
                    }
                } catch {
                    answer.errorCode = error.errorCode.rawValue
                }
                out.partitions.append(answer)
            }
            response.topics.append(out)
        }
        return response
    }
}
