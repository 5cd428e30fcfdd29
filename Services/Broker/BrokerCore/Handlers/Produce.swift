import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import NIOCore

/// Produce (DESIGN §4): validate each partition's record set, let the leader assign offsets and
/// queue the append at the WAL writer (in request order, inside `accept`), answer once durable.
enum Produce {
    /// Decompressed bytes one batch may expand to while it is validated.
    static let maxUncompressedBytes = 256 << 20

    /// One partition's verdict before anything is appended.
    enum Checked {
        case rejected(code: KafkaErrorCode, message: String, batchIndex: Int32?)
        case accepted(ReplicaManager.Append)
    }

    static func accept(_ request: ProduceRequest, version: Int16, context: BrokerContext) async -> KafkaPendingResponse {
        let checked = check(request, context: context)
        let appends = accepted(checked)
        let (local, routed) = split(appends, context: context)
        let localFutures = local.isEmpty ? [] : await context.replicas.enqueue(local.map { appends[$0] })
        let futures = merge(appends, local: local, localFutures: localFutures, routed: routed, context: context)
        return respond(request, checked: checked, appends: appends, futures: futures, version: version, context: context)
    }

    /// `accept` without a task, on the replica manager's event loop (the caller checks it runs there).
    static func acceptOnLoop(_ request: ProduceRequest, version: Int16, context: BrokerContext) -> KafkaPendingResponse {
        let checked = check(request, context: context)
        let appends = accepted(checked)
        let (local, routed) = split(appends, context: context)
        let localFutures = local.isEmpty ? [] : context.replicas.assumeIsolated { replicas in replicas.enqueue(local.map { appends[$0] }) }
        let futures = merge(appends, local: local, localFutures: localFutures, routed: routed, context: context)
        return respond(request, checked: checked, appends: appends, futures: futures, version: version, context: context)
    }

    /// Which appends this broker makes itself (indices) and which it routes to leaders in other zones
    /// (index, leader, epoch): with zone routing, those for partitions whose active leader is in another zone.
    private static func split(
        _ appends: [ReplicaManager.Append], context: BrokerContext
    ) -> (local: [Int], routed: [(index: Int, leader: NodeID, epoch: LeaderEpoch)]) {
        guard context.router != nil, !appends.isEmpty else { return (Array(appends.indices), []) }
        let state = context.replicas.latestState
        var local: [Int] = []
        var routed: [(index: Int, leader: NodeID, epoch: LeaderEpoch)] = []
        for (index, append) in appends.enumerated() {
            if let partition = state.partition(append.key), partition.leader != context.settings.nodeId,
               let leader = state.nodes[partition.leader], leader.state == .active, leader.kind == .broker, leader.zone != context.settings.zone {
                routed.append((index, partition.leader, partition.leaderEpoch))
            } else {
                local.append(index)
            }
        }
        return (local, routed)
    }

    /// One future per append, in order: the local ones from the replica manager, the routed ones from the router.
    private static func merge(
        _ appends: [ReplicaManager.Append], local: [Int], localFutures: [EventLoopFuture<AppendResult>],
        routed: [(index: Int, leader: NodeID, epoch: LeaderEpoch)], context: BrokerContext
    ) -> [EventLoopFuture<AppendResult>] {
        guard !routed.isEmpty, let router = context.router else { return localFutures }
        let loop = context.replicas.eventLoop
        var futures = [EventLoopFuture<AppendResult>?](repeating: nil, count: appends.count)
        for (slot, index) in local.enumerated() { futures[index] = localFutures[slot] }
        for item in routed {
            let promise = loop.makePromise(of: AppendResult.self)
            let append = appends[item.index]
            promise.completeWithTask { await router.route(append, leader: item.leader, epoch: item.epoch) }
            futures[item.index] = promise.futureResult
        }
        return futures.map { $0! }
    }

    private typealias Verdicts = [(topic: String, partition: Int32, verdict: Checked)]

    /// Every partition's verdict, in request order.
    private static func check(_ request: ProduceRequest, context: BrokerContext) -> Verdicts {
        // The image the partitions were last brought in line with: no hop to the metadata follower.
        let state = context.replicas.latestState
        let now = context.now()
        var checked: Verdicts = []
        for topic in request.topicData {
            for partition in topic.partitionData {
                let verdict: Checked
                if ![-1, 0, 1].contains(request.acks) {
                    verdict = .rejected(code: .invalidRequiredAcks, message: "acks must be -1, 0 or 1", batchIndex: nil)
                } else if request.transactionalId != nil {
                    verdict = .rejected(code: .transactionalIdAuthorizationFailed, message: "transactions are not supported", batchIndex: nil)
                } else {
                    verdict = check(topic: topic.name, partition: partition.index, records: partition.records, state: state, now: now, context: context)
                }
                checked.append((topic.name, partition.index, verdict))
            }
        }
        return checked
    }

    private static func accepted(_ checked: Verdicts) -> [ReplicaManager.Append] {
        var appends: [ReplicaManager.Append] = []
        for item in checked {
            if case .accepted(let append) = item.verdict { appends.append(append) }
        }
        return appends
    }

    /// The answer, once every queued append is durable (or failed): a future, so it is written from the
    /// callback that learns of the last one.
    private static func respond(
        _ request: ProduceRequest, checked verdicts: Verdicts, appends: [ReplicaManager.Append],
        futures: [EventLoopFuture<AppendResult>], version: Int16, context: BrokerContext
    ) -> KafkaPendingResponse {
        if request.acks == 0 { return .immediate(.noResponse) }
        let logger = context.logger
        let started = ContinuousClock.now
        BrokerMetrics.produceBytes.increment(by: appends.reduce(0) { $0 + $1.records.readableBytes })
        let loop = context.replicas.eventLoop
        let answered = EventLoopFuture.whenAllComplete(futures, on: loop).map { outcomes -> KafkaResponseAction in
            defer {
                BrokerMetrics.produceSeconds.recordNanoseconds(
                    Int64(((ContinuousClock.now - started) / .nanoseconds(1)).rounded()))
            }
            var next = 0
            var order: [String] = []
            var byTopic: [String: [ProduceResponse.PartitionProduceResponse]] = [:]
            for item in verdicts {
                var answer = ProduceResponse.PartitionProduceResponse()
                answer.index = item.partition
                switch item.verdict {
                case .rejected(let code, let message, let batchIndex):
                    answer.errorCode = code.rawValue
                    answer.baseOffset = -1
                    if version >= 8 {
                        answer.errorMessage = message
                        if let batchIndex {
                            var error = ProduceResponse.BatchIndexAndErrorMessage()
                            error.batchIndex = batchIndex
                            error.batchIndexErrorMessage = message
                            answer.recordErrors = [error]
                        }
                    }
                case .accepted:
                    let result = (try? outcomes[next].get()) ?? .failure(.unknownServerError)
                    next += 1
                    answer.errorCode = result.errorCode
                    answer.baseOffset = result.baseOffset
                    answer.logAppendTimeMs = result.logAppendTime
                    answer.logStartOffset = result.logStartOffset
                    if version >= 8 { answer.errorMessage = result.errorCode == 0 ? nil : result.errorMessage }
                }
                if byTopic[item.topic] == nil { order.append(item.topic) }
                byTopic[item.topic, default: []].append(answer)
            }
            var response = ProduceResponse()
            response.responses = order.map { name in
                var topic = ProduceResponse.TopicProduceResponse()
                topic.name = name
                topic.partitionResponses = byTopic[name] ?? []
                return topic
            }
            return encode(response, version: version, logger: logger)
        }
        return KafkaPendingResponse(future: answered)
    }

    /// Checks one partition's record set: the partition exists, every batch is a whole v2 batch within
    /// `max.message.bytes` whose CRC and records are valid. Nothing of a rejected set is written.
    static func check(
        topic name: String, partition: Int32, records: ByteBuffer?, state: MetadataState, now: Int64, context: BrokerContext
    ) -> Checked {
        guard let topic = state.topics[name], partition >= 0, Int(partition) < topic.partitions.count else {
            return .rejected(code: .unknownTopicOrPartition, message: "unknown topic or partition \(name)-\(partition)", batchIndex: nil)
        }
        guard let records, records.readableBytes > 0 else {
            return .rejected(code: .invalidRecord, message: "empty record set", batchIndex: nil)
        }
        let maxBytes = Int(TopicDefaults.maxMessageBytes(in: topic.configs, settings: context.settings))
        var iterator = RecordSetIterator(records, maxBatchBytes: maxBytes)
        var batches: [ReplicaManager.BatchInfo] = []
        var index: Int32 = 0
        let logAppend = TopicDefaults.usesLogAppendTime(in: topic.configs, settings: context.settings)
        var start = 0
        while true {
            let batch: RecordBatch?
            do {
                batch = try iterator.next()
            } catch {
                return .rejected(code: KafkaErrorCode(rawValue: error.kafkaErrorCode) ?? .corruptMessage, message: "\(error)", batchIndex: index)
            }
            guard let batch else { break }
            do {
                try batch.validate(maxUncompressedBytes: maxUncompressedBytes)
            } catch {
                return .rejected(code: KafkaErrorCode(rawValue: error.kafkaErrorCode) ?? .corruptMessage, message: "\(error)", batchIndex: index)
            }
            if batch.isControl {
                return .rejected(code: .invalidRecord, message: "clients may not write control batches", batchIndex: index)
            }
            if batch.isTransactional {
                return .rejected(code: .invalidRecord, message: "transactions are not supported", batchIndex: index)
            }
            if batch.producerId >= 0, batch.baseSequence < 0 {
                return .rejected(code: .invalidRecord, message: "an idempotent batch needs a base sequence", batchIndex: index)
            }
            batches.append(
                ReplicaManager.BatchInfo(
                    start: start, count: Int64(batch.lastOffsetDelta) + 1, producerId: batch.producerId,
                    producerEpoch: batch.producerEpoch, baseSequence: batch.baseSequence))
            start += batch.sizeInBytes
            index += 1
        }
        if iterator.partialBatch != nil {
            return .rejected(code: .corruptMessage, message: "the record set ends inside a batch", batchIndex: index)
        }
        guard !batches.isEmpty else { return .rejected(code: .invalidRecord, message: "no batches", batchIndex: nil) }
        return .accepted(
            ReplicaManager.Append(
                key: PartitionKey(topic: name, partition: partition), records: records, batches: batches,
                logAppendTime: logAppend ? now : nil))
    }
}
