import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import NIOCore

/// ListOffsets: earliest (-2), latest (-1), max timestamp (-3) and the first offset at or after a
/// timestamp, answered by the partition leader (with zone routing, for a partition led from another zone, from its
/// committed data: latest is the committed end).
enum ListOffsets {
    static let earliest: Int64 = -2
    static let latest: Int64 = -1
    static let maxTimestamp: Int64 = -3
    /// Bytes read per step of a timestamp search.
    static let scanChunk = 1 << 20

    static func handle(_ request: ListOffsetsRequest, version: Int16, context: BrokerContext) async -> ListOffsetsResponse {
        var response = ListOffsetsResponse()
        for topic in request.topics {
            var out = ListOffsetsResponse.ListOffsetsTopicResponse()
            out.name = topic.name
            for partition in topic.partitions {
                var answer = ListOffsetsResponse.ListOffsetsPartitionResponse()
                answer.partitionIndex = partition.partitionIndex
                answer.timestamp = -1
                answer.offset = -1
                answer.leaderEpoch = -1
                let key = PartitionKey(topic: topic.name, partition: partition.partitionIndex)
                do {
                    let view = try await ZoneReads.view(key, context: context).view
                    if let code = Fetch.epochError(requested: version >= 4 ? partition.currentLeaderEpoch : -1, current: view.leaderEpoch) {
                        throw PartitionUnavailable.coded(code)
                    }
                    if version >= 4 { answer.leaderEpoch = view.leaderEpoch }
                    switch partition.timestamp {
                    case earliest:
                        answer.offset = view.logStartOffset
                    case latest:
                        answer.offset = view.highWatermark
                    default:
                        if partition.timestamp < 0 && partition.timestamp != maxTimestamp {
                            throw PartitionUnavailable.coded(.invalidRequest)
                        }
                        if let found = try await search(key, view: view, timestamp: partition.timestamp, context: context) {
                            answer.offset = found.offset
                            answer.timestamp = found.timestamp
                        }
                    }
                } catch let error as PartitionUnavailable {
                    answer.errorCode = error.errorCode.rawValue
                    answer.leaderEpoch = -1
                } catch let error as PartitionReads.Failure {
                    answer.errorCode = error.code.rawValue
                } catch {
                    answer.errorCode = KafkaErrorCode.unknownServerError.rawValue
                }
                out.partitions.append(answer)
            }
            response.topics.append(out)
        }
        return response
    }

    /// The first record with a timestamp at or after `timestamp`, or for -3 the record with the
    /// largest timestamp (the first such); nil when there is none. Walks the partition's batches,
    /// skipping those whose max timestamp is too small without decompressing them.
    static func search(
        _ key: PartitionKey, view: PartitionView, timestamp: Int64, context: BrokerContext
    ) async throws -> (offset: Int64, timestamp: Int64)? {
        var offset = view.logStartOffset
        var best: (offset: Int64, timestamp: Int64)?
        while offset < view.highWatermark {
            let bytes = try await PartitionReads.read(key, view: view, from: offset, maxBytes: scanChunk, context: context)
            var iterator = RecordSetIterator(bytes)
            var progressed = false
            while let batch = try iterator.next() {
                progressed = true
                offset = max(offset, batch.nextOffset)
                if timestamp == maxTimestamp {
                    if batch.maxTimestamp > (best?.timestamp ?? Int64.min) {
                        best = (try firstRecord(in: batch, atLeast: batch.maxTimestamp) ?? batch.lastOffset, batch.maxTimestamp)
                    }
                    continue
                }
                guard batch.maxTimestamp >= timestamp else { continue }
                if let found = try firstRecordWithTime(in: batch, atLeast: timestamp) { return found }
            }
            if !progressed { break }
        }
        return best
    }

    static func firstRecord(in batch: RecordBatch, atLeast timestamp: Int64) throws -> Int64? {
        try firstRecordWithTime(in: batch, atLeast: timestamp)?.offset
    }

    /// For LogAppendTime batches every record carries the batch's max timestamp.
    static func firstRecordWithTime(in batch: RecordBatch, atLeast timestamp: Int64) throws -> (offset: Int64, timestamp: Int64)? {
        if batch.timestampType == .logAppendTime {
            return batch.maxTimestamp >= timestamp ? (batch.baseOffset, batch.maxTimestamp) : nil
        }
        for record in try batch.records(maxUncompressedBytes: Produce.maxUncompressedBytes) {
            let time = batch.baseTimestamp &+ record.timestampDelta
            if time >= timestamp { return (batch.baseOffset + Int64(record.offsetDelta), time) }
        }
        return nil
    }
}
