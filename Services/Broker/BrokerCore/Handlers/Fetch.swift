import ClusterMetadata
import KafkaProtocol
import NIOCore

/// Fetch (DESIGN §5): long-polls until `min_bytes` are available or `max_wait_ms` passes, waking
/// when a high watermark moves. Sessionless: every answer carries session id 0, which tells clients
/// that asked for a session to keep sending full requests.
enum Fetch {
    /// Longest wait honoured, whatever the client asks.
    static let maxWait = Duration.seconds(30)

    static func handle(_ request: FetchRequest, version: Int16, context: BrokerContext) async -> FetchResponse {
        var response = FetchResponse()
        response.sessionId = 0
        if request.sessionId != 0 {
            response.errorCode = KafkaErrorCode.fetchSessionIdNotFound.rawValue
            return response
        }
        let clock = ContinuousClock()
        let wait = min(Duration.milliseconds(Int64(max(request.maxWaitMs, 0))), maxWait)
        let deadline = clock.now.advanced(by: wait)
        let minBytes = max(Int(request.minBytes), 1)
        var seen = await context.replicas.changeCount
        while true {
            let (answer, bytes, hasError) = await collect(request, version: version, context: context)
            if bytes >= minBytes || hasError || clock.now >= deadline || Task.isCancelled {
                BrokerMetrics.fetchBytes.increment(by: bytes)
                response.responses = answer
                return response
            }
            seen = await context.replicas.waitForChange(after: seen, timeout: clock.now.duration(to: deadline))
        }
    }

    /// One pass over the requested partitions; returns the answer, its record bytes and whether any partition failed.
    static func collect(
        _ request: FetchRequest, version: Int16, context: BrokerContext
    ) async -> ([FetchResponse.FetchableTopicResponse], Int, Bool) {
        var budget = version >= 3 ? Int(request.maxBytes) : Int.max
        if budget <= 0 { budget = 1 }
        var total = 0
        var failed = false
        var topics: [FetchResponse.FetchableTopicResponse] = []
        for topic in request.topics {
            var out = FetchResponse.FetchableTopicResponse()
            out.topic = topic.topic
            out.topicId = topic.topicId
            for partition in topic.partitions {
                var data = FetchResponse.PartitionData()
                data.partitionIndex = partition.partition
                data.preferredReadReplica = -1
                data.abortedTransactions = request.isolationLevel == 1 ? [] : nil
                data.records = ByteBuffer()
                let key = PartitionKey(topic: topic.topic, partition: partition.partition)
                do throws(PartitionUnavailable) {
                    let view = try await context.replicas.view(key)
                    if let code = epochError(requested: partition.currentLeaderEpoch, current: view.leaderEpoch) {
                        throw PartitionUnavailable.coded(code)
                    }
                    data.highWatermark = view.highWatermark
                    data.lastStableOffset = view.highWatermark
                    data.logStartOffset = view.logStartOffset
                    let offset = partition.fetchOffset
                    if offset < view.logStartOffset || offset > view.logEndOffset {
                        data.errorCode = KafkaErrorCode.offsetOutOfRange.rawValue
                        failed = true
                    } else if offset < view.highWatermark {
                        // The first partition with data may exceed the budget by one batch (KIP-74).
                        let room = total == 0 ? max(budget, 1) : budget - total
                        if room > 0 {
                            let limit = min(Int(max(partition.partitionMaxBytes, 1)), room)
                            do {
                                let bytes = try await PartitionReads.read(key, view: view, from: offset, maxBytes: limit, context: context)
                                total += bytes.readableBytes
                                data.records = bytes
                            } catch {
                                data.errorCode = error.code.rawValue
                                failed = true
                            }
                        }
                    }
                } catch {
                    data.errorCode = error.errorCode.rawValue
                    data.highWatermark = -1
                    data.lastStableOffset = -1
                    data.logStartOffset = -1
                    failed = true
                    if version >= 12, error.errorCode == .notLeaderOrFollower || error.errorCode == .fencedLeaderEpoch,
                       let record = await context.metadata.state.partition(key) {
                        // Tells the client where to go without a Metadata round trip (KIP-951 style hint).
                        data.currentLeader.leaderId = record.leader
                        data.currentLeader.leaderEpoch = record.leaderEpoch
                    }
                }
                out.partitions.append(data)
            }
            topics.append(out)
        }
        return (topics, total, failed)
    }

    /// FENCED_LEADER_EPOCH when the client's epoch is older than the leader's, UNKNOWN_LEADER_EPOCH
    /// when newer (this broker has not caught up with the metadata yet); -1 skips the check.
    static func epochError(requested: Int32, current: Int32) -> KafkaErrorCode? {
        if requested < 0 || requested == current { return nil }
        return requested < current ? .fencedLeaderEpoch : .unknownLeaderEpoch
    }
}
