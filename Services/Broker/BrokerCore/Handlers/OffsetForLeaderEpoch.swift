import ClusterMetadata
import KafkaProtocol

/// OffsetForLeaderEpoch: where a leader epoch ended, so consumers can detect log truncation. Floe
/// never truncates acknowledged data, so for an older epoch the answer is where the current epoch
/// began (never below the true end, so no client truncates wrongly).
enum OffsetForLeaderEpoch {
    static func handle(_ request: OffsetForLeaderEpochRequest, version: Int16, context: BrokerContext) async -> OffsetForLeaderEpochResponse {
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
