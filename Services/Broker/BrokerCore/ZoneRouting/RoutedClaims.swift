import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import Logging
import NIOCore
import ObjectStorage

/// The leader half of zone routing: a claim names byte ranges of a routed object; the leader reads
/// them from object storage and appends each through the same checks and path as a Produce (CRC,
/// batch validation, idempotent sequence and epoch, leader epoch), answering with the real offsets
/// once durable. A claim for an object that is not a routed object's key, is missing, or whose
/// bytes do not match their CRC is refused and nothing of it is appended.
///
/// Claims are answered exactly once per object: a repeated claim (the routing broker retrying after a
/// lost connection) joins the first one's work or gets its recorded answer.
public actor RoutedClaims {
    private let store: any ObjectStore
    private let logger: Logger
    /// Answers by object id, in flight or recent (bounded, oldest dropped first).
    private var answers: [ObjectID: Task<RoutedClaimResponse, Never>] = [:]
    private var order: [ObjectID] = []
    private let remembered: Int
    /// The largest byte span one claim may ask to read.
    public static let maxClaimBytes = 256 << 20

    public init(store: any ObjectStore, logger: Logger, remembered: Int = 4096) {
        self.store = store
        self.logger = logger
        self.remembered = remembered
    }

    /// The answer to `request`, computed once per object id. A claim refused because the store could
    /// not be read appended nothing, so it is not remembered: a retry reads the object again.
    public func handle(_ request: RoutedClaimRequest, context: BrokerContext) async -> RoutedClaimResponse {
        if let existing = answers[request.objectId] { return await existing.value }
        let store = store
        let task = Task { await Self.claim(request, store: store, context: context) }
        answers[request.objectId] = task
        order.append(request.objectId)
        if order.count > remembered { answers[order.removeFirst()] = nil }
        let response = await task.value
        if response.errorCode == KafkaErrorCode.kafkaStorageError.rawValue, answers[request.objectId] == task {
            answers[request.objectId] = nil
        }
        return response
    }

    static func refused(_ request: RoutedClaimRequest, _ code: KafkaErrorCode, _ message: String) -> RoutedClaimResponse {
        var response = RoutedClaimResponse()
        response.errorCode = code.rawValue
        response.errorMessage = message
        return response
    }

    static func claim(_ request: RoutedClaimRequest, store: any ObjectStore, context: BrokerContext) async -> RoutedClaimResponse {
        guard let parsed = ObjectKey.parse(request.objectKey), parsed.kind == .routed, Int64(bitPattern: parsed.id) == request.objectId else {
            return refused(request, .invalidRequest, "\(request.objectKey) is not the key of routed object \(request.objectId)")
        }
        let partitions = request.topics.flatMap { topic in topic.partitions.map { (topic: topic.name, partition: $0) } }
        guard !partitions.isEmpty else { return refused(request, .invalidRequest, "a claim names no partitions") }
        guard partitions.allSatisfy({ $0.partition.position >= 0 && $0.partition.length > 0 }) else {
            return refused(request, .invalidRequest, "claimed ranges must have a position ≥ 0 and a positive length")
        }
        let low = partitions.map(\.partition.position).min() ?? 0
        let high = partitions.map { $0.partition.position + Int64($0.partition.length) }.max() ?? 0
        guard high - low <= maxClaimBytes else { return refused(request, .invalidRequest, "a claim may span at most \(maxClaimBytes) bytes") }
        let bytes: ByteBuffer
        do {
            bytes = try await store.get(request.objectKey, range: Int(low)..<Int(high))
        } catch ObjectStoreError.notFound {
            return refused(request, .invalidRequest, "routed object \(request.objectKey) does not exist")
        } catch {
            return refused(request, .kafkaStorageError, "cannot read routed object \(request.objectKey): \(error)")
        }
        guard bytes.readableBytes == Int(high - low) else {
            return refused(request, .corruptMessage, "routed object \(request.objectKey) is shorter than its claimed ranges")
        }
        // Every range is checked before anything is appended: a corrupt object appends nothing.
        var slices: [ByteBuffer] = []
        for item in partitions {
            guard let slice = bytes.getSlice(at: bytes.readerIndex + Int(item.partition.position - low), length: Int(item.partition.length)),
                  CRC32C.checksum(slice) == UInt32(bitPattern: item.partition.crc)
            else {
                return refused(request, .corruptMessage, "routed bytes of \(item.topic)-\(item.partition.index) do not match their CRC")
            }
            slices.append(slice)
        }
        let state = context.replicas.latestState
        let now = context.now()
        /// An append to make, or the answer already known.
        enum Verdict {
            case append(ReplicaManager.Append)
            case answered(AppendResult)
        }
        var verdicts: [Verdict] = []
        for (item, slice) in zip(partitions, slices) {
            let key = PartitionKey(topic: item.topic, partition: item.partition.index)
            if item.partition.leaderEpoch >= 0, let current = state.partition(key)?.leaderEpoch,
               let code = Fetch.epochError(requested: item.partition.leaderEpoch, current: current) {
                verdicts.append(.answered(.failure(code, "claimed at leader epoch \(item.partition.leaderEpoch), the partition is at \(current)")))
                continue
            }
            switch Produce.check(topic: item.topic, partition: item.partition.index, records: slice, state: state, now: now, context: context) {
            case .accepted(let append): verdicts.append(.append(append))
            case .rejected(let code, let message, _): verdicts.append(.answered(.failure(code, message)))
            }
        }
        let appends = verdicts.compactMap { if case .append(let append) = $0 { append } else { nil } }
        let futures = appends.isEmpty ? [] : await context.replicas.enqueue(appends)
        var next = 0
        var results: [AppendResult] = []
        for verdict in verdicts {
            switch verdict {
            case .answered(let result): results.append(result)
            case .append:
                results.append((try? await futures[next].get()) ?? .failure(.unknownServerError, "append failed"))
                next += 1
            }
        }
        BrokerMetrics.claimedBytes.increment(by: slices.reduce(0) { $0 + $1.readableBytes })
        var response = RoutedClaimResponse()
        var index = 0
        for topic in request.topics {
            var out = RoutedClaimResponse.ClaimTopicResult()
            out.name = topic.name
            for partition in topic.partitions {
                let result = results[index]
                index += 1
                var answer = RoutedClaimResponse.ClaimPartitionResult()
                answer.index = partition.index
                answer.errorCode = result.errorCode
                answer.errorMessage = result.errorCode == 0 ? nil : result.errorMessage
                answer.baseOffset = result.baseOffset
                answer.logAppendTimeMs = result.logAppendTime
                answer.logStartOffset = result.logStartOffset
                out.partitions.append(answer)
            }
            response.topics.append(out)
        }
        return response
    }
}
