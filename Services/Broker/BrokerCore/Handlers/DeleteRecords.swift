import ClusterMetadata
import KafkaProtocol

/// DeleteRecords: moves a partition's log start offset forward (the controller trims the stream;
/// the compactor drops objects that fall wholly below it).
enum DeleteRecords {
    static func handle(_ request: DeleteRecordsRequest, version: Int16, context: BrokerContext) async -> DeleteRecordsResponse {
        var response = DeleteRecordsResponse()
        for topic in request.topics {
            var out = DeleteRecordsResponse.DeleteRecordsTopicResult()
            out.name = topic.name
            for partition in topic.partitions {
                var answer = DeleteRecordsResponse.DeleteRecordsPartitionResult()
                answer.partitionIndex = partition.partitionIndex
                answer.lowWatermark = -1
                let key = PartitionKey(topic: topic.name, partition: partition.partitionIndex)
                do {
                    let view = try await context.replicas.view(key)
                    // -1 means "up to the high watermark".
                    let target = partition.offset == -1 ? view.highWatermark : partition.offset
                    guard target >= 0, target <= view.highWatermark else { throw PartitionUnavailable.coded(.offsetOutOfRange) }
                    if target > view.logStartOffset {
                        let result = try await context.writer.writeAndWait(
                            .trimStream(streamId: view.streamId, newStart: target, now: context.now()), metadata: context.metadata)
                        if case .error(let error) = result {
                            throw PartitionUnavailable.coded(KafkaErrorCode(rawValue: error.code) ?? .unknownServerError)
                        }
                        await context.replicas.raiseLogStart(key, to: target)
                    }
                    answer.lowWatermark = max(target, view.logStartOffset)
                } catch let error as PartitionUnavailable {
                    answer.errorCode = error.errorCode.rawValue
                } catch {
                    answer.errorCode = KafkaErrorCode.requestTimedOut.rawValue
                }
                out.partitions.append(answer)
            }
            response.topics.append(out)
        }
        return response
    }
}
