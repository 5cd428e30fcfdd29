import ClusterMetadata
import KafkaProtocol
import NIOCore

/// Fetch (DESIGN §5): long-polls until `min_bytes` are available or `max_wait_ms` passes, waking
/// when a high watermark moves. Incremental fetch sessions (KIP-227) follow `FetchSessionCache`:
/// the session says what to fetch (for an incremental request, every partition of the session, so
/// the long-poll ends on data in any of them) and which fetched partitions the answer names.
enum Fetch {
    /// Longest wait honoured, whatever the client asks.
    static let maxWait = Duration.seconds(30)

    typealias Planned = FetchSessionCache.Planned

    static func handle(_ request: FetchRequest, version: Int16, context: BrokerContext) async -> FetchResponse {
        var response = FetchResponse()
        let session = sessionPart(of: request, version: version)
        let kind: FetchKind =
            session.sessionEpoch == FetchSessionCache.initialEpoch || session.sessionEpoch == FetchSessionCache.finalEpoch
            ? .full : .incremental
        BrokerMetrics.fetchRequests[kind]?.increment()
        BrokerMetrics.fetchRequestPartitions[kind]?.record(session.partitions.count)
        let plan: FetchSessionCache.Plan
        switch context.fetchSessions.begin(session) {
        case .refused(let code):
            BrokerMetrics.fetchSessionErrors[code]?.increment()
            response.errorCode = code.rawValue
            return response
        case .fetch(let planned):
            plan = planned
        }
        let clock = ContinuousClock()
        let wait = min(Duration.milliseconds(Int64(max(request.maxWaitMs, 0))), maxWait)
        let deadline = clock.now.advanced(by: wait)
        // min_bytes 0 asks for an answer at once, whatever there is (as Kafka does); otherwise wait for at least one byte.
        let minBytes = max(Int(request.minBytes), 0)
        var answers: [FetchResponse.PartitionData]
        var seen = await context.replicas.changeCount
        while true {
            let (found, bytes, hasError) = await collect(plan.partitions, request: request, version: version, context: context)
            if plan.partitions.isEmpty || bytes >= minBytes || hasError || clock.now >= deadline || Task.isCancelled {
                BrokerMetrics.fetchBytes.increment(by: bytes)
                answers = found
                break
            }
            seen = await context.replicas.waitForChange(after: seen, timeout: clock.now.duration(to: deadline))
        }
        let answer = context.fetchSessions.finish(plan, outcomes: answers.map(outcome))
        response.sessionId = answer.sessionId
        response.responses = grouped(answer.include.map { (plan.partitions[$0].ref, answers[$0]) })
        BrokerMetrics.fetchResponsePartitions[kind]?.record(answer.include.count)
        return response
    }

    /// The request as the session rules see it: partitions by name below v13, by topic id from v13.
    static func sessionPart(of request: FetchRequest, version: Int16) -> FetchSessionCache.Request {
        let usesTopicIds = version >= 13
        func ref(_ name: String, _ id: KafkaUUID, _ partition: Int32) -> FetchSessionCache.PartitionRef {
            usesTopicIds ? .init(topic: "", topicId: id, partition: partition) : .init(topic: name, partition: partition)
        }
        let partitions = request.topics.flatMap { topic in
            topic.partitions.map { partition in
                (
                    ref: ref(topic.topic, topic.topicId, partition.partition),
                    position: FetchSessionCache.Position(
                        fetchOffset: partition.fetchOffset, partitionMaxBytes: partition.partitionMaxBytes,
                        logStartOffset: partition.logStartOffset, currentLeaderEpoch: partition.currentLeaderEpoch,
                        lastFetchedEpoch: partition.lastFetchedEpoch)
                )
            }
        }
        let forgotten = request.forgottenTopicsData.flatMap { topic in topic.partitions.map { ref(topic.topic, topic.topicId, $0) } }
        return FetchSessionCache.Request(
            sessionId: request.sessionId, sessionEpoch: request.sessionEpoch, usesTopicIds: usesTopicIds, partitions: partitions,
            forgotten: forgotten)
    }

    /// What the session rules need to know of one partition's answer.
    static func outcome(_ data: FetchResponse.PartitionData) -> FetchSessionCache.Outcome {
        let reported = FetchSessionCache.Reported(
            highWatermark: data.highWatermark, lastStableOffset: data.lastStableOffset, logStartOffset: data.logStartOffset,
            preferredReadReplica: data.preferredReadReplica)
        return FetchSessionCache.Outcome(reported: data.errorCode == 0 ? reported : nil, returnedRecords: (data.records?.readableBytes ?? 0) > 0)
    }

    /// Partition answers under their topics: consecutive partitions of one topic share its entry.
    static func grouped(_ answers: [(FetchSessionCache.PartitionRef, FetchResponse.PartitionData)]) -> [FetchResponse.FetchableTopicResponse] {
        var topics: [FetchResponse.FetchableTopicResponse] = []
        for (ref, data) in answers {
            if let last = topics.indices.last, topics[last].topic == ref.topic, topics[last].topicId == ref.topicId {
                topics[last].partitions.append(data)
            } else {
                var topic = FetchResponse.FetchableTopicResponse()
                topic.topic = ref.topic
                topic.topicId = ref.topicId
                topic.partitions = [data]
                topics.append(topic)
            }
        }
        return topics
    }

    /// One pass over `partitions`; returns an answer per partition (same order), their record bytes and whether any partition failed.
    static func collect(
        _ partitions: [Planned], request: FetchRequest, version: Int16, context: BrokerContext
    ) async -> ([FetchResponse.PartitionData], Int, Bool) {
        var budget = version >= 3 ? Int(request.maxBytes) : Int.max
        if budget <= 0 { budget = 1 }
        var total = 0
        var failed = false
        // Topic ids (v13 on) name topics of the image this broker acts on.
        let state = version >= 13 ? context.replicas.latestState : nil
        var answers: [FetchResponse.PartitionData] = []
        answers.reserveCapacity(partitions.count)
        for planned in partitions {
            var data = FetchResponse.PartitionData()
            data.partitionIndex = planned.ref.partition
            data.preferredReadReplica = -1
            data.abortedTransactions = request.isolationLevel == 1 ? [] : nil
            data.records = ByteBuffer()
            let name: String? = if let state { state.topic(id: planned.ref.topicId)?.name } else { planned.ref.topic }
            guard let name else {
                data.errorCode = KafkaErrorCode.unknownTopicId.rawValue
                data.highWatermark = -1
                data.lastStableOffset = -1
                data.logStartOffset = -1
                failed = true
                answers.append(data)
                continue
            }
            let key = PartitionKey(topic: name, partition: planned.ref.partition)
            let position = planned.position
            do throws(PartitionUnavailable) {
                let (view, committedOnly) = try await ZoneReads.view(key, context: context)
                if let code = epochError(requested: position.currentLeaderEpoch, current: view.leaderEpoch) {
                    throw PartitionUnavailable.coded(code)
                }
                data.highWatermark = view.highWatermark
                data.lastStableOffset = view.highWatermark
                data.logStartOffset = view.logStartOffset
                let offset = position.fetchOffset
                if version >= 11, !committedOnly,
                   let replica = ZoneReads.preferredReadReplica(key, rack: request.rackId, context: context) {
                    // KIP-392: the consumer's own zone serves it; no records from here.
                    data.preferredReadReplica = replica
                } else if offset < view.logStartOffset || (offset > view.logEndOffset && !committedOnly) {
                    data.errorCode = KafkaErrorCode.offsetOutOfRange.rawValue
                    failed = true
                } else if offset < view.highWatermark {
                    // The first partition with data may exceed the budget by one batch (KIP-74).
                    let room = total == 0 ? max(budget, 1) : budget - total
                    if room > 0 {
                        let limit = min(Int(max(position.partitionMaxBytes, 1)), room)
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
            answers.append(data)
        }
        return (answers, total, failed)
    }

    /// FENCED_LEADER_EPOCH when the client's epoch is older than the leader's, UNKNOWN_LEADER_EPOCH
    /// when newer (this broker has not caught up with the metadata yet); -1 skips the check.
    static func epochError(requested: Int32, current: Int32) -> KafkaErrorCode? {
        if requested < 0 || requested == current { return nil }
        return requested < current ? .fencedLeaderEpoch : .unknownLeaderEpoch
    }
}
