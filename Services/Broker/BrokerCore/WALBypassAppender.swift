import ClusterMetadata
import ControllerClient
import DequeModule
import KafkaProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ObjectStorage

/// The WAL-bypass append path (`floe-broker --wal-bypass`), kept to measure what the WAL buys:
/// appends are acknowledged only once they are in a committed object. Appends arriving while an
/// upload is in flight are grouped into the next one (one object, one PUT, one commit), so this is
/// the best a direct-to-object-storage design can do, not a strawman.
public actor WALBypassAppender {
    struct Pending {
        var stream: StreamID
        var epoch: LeaderEpoch
        var baseOffset: Int64
        var lastOffset: Int64
        var batches: ByteBuffer
        var promise: EventLoopPromise<WALCallError?>
    }

    let store: any ObjectStore
    let writer: any MetadataWriter
    let metadata: any MetadataSource
    let logger: Logger
    let eventLoop: any EventLoop
    private var uploading = false
    public private(set) var uploads = 0

    public init(store: any ObjectStore, writer: any MetadataWriter, metadata: any MetadataSource, logger: Logger) {
        self.store = store
        self.writer = writer
        self.metadata = metadata
        self.logger = logger
        self.eventLoop = MultiThreadedEventLoopGroup.singleton.any()
    }

    /// Queues an append for the next object; the future completes with nil once it is committed.
    /// Synchronous, so appends a partition queues one after another keep their order.
    nonisolated func enqueue(stream: StreamID, epoch: LeaderEpoch, baseOffset: Int64, lastOffset: Int64, batches: ByteBuffer) -> EventLoopFuture<WALCallError?> {
        let promise = eventLoop.makePromise(of: WALCallError?.self)
        let item = Pending(stream: stream, epoch: epoch, baseOffset: baseOffset, lastOffset: lastOffset, batches: batches, promise: promise)
        queue.withLockedValue { $0.append(item) }
        Task { await self.kick() }
        return promise.futureResult
    }

    private nonisolated let queue = NIOLockedValueBox<Deque<Pending>>([])

    private func kick() async {
        guard !uploading else { return }
        uploading = true
        defer { uploading = false }
        while true {
            let batch = queue.withLockedValue { items -> [Pending] in
                let all = Array(items)
                items.removeAll()
                return all
            }
            guard !batch.isEmpty else { return }
            let outcome = await upload(batch)
            for item in batch { item.promise.succeed(outcome) }
        }
    }

    private func upload(_ items: [Pending]) async -> WALCallError? {
        do {
            let prepared = try await writer.writeWithIndex(.prepareObject(kind: .streamSet, deadline: wallClockMillis() + 60_000)).result
            guard case .objectPrepared(let objectId) = prepared else {
                return WALCallError(code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "prepareObject answered \(prepared)")
            }
            var object = ObjectWriter(expectedBytes: items.reduce(0) { $0 + $1.batches.readableBytes })
            var ranges: [StreamRange] = []
            // One block run per stream, streams in first-arrival order, each stream's appends in order.
            var order: [StreamID] = []
            var byStream: [StreamID: [Pending]] = [:]
            for item in items {
                if byStream[item.stream] == nil { order.append(item.stream) }
                byStream[item.stream, default: []].append(item)
            }
            for stream in order {
                let appends = byStream[stream] ?? []
                guard let first = appends.first, let last = appends.last else { continue }
                for append in appends {
                    try object.append(
                        streamID: UInt64(bitPattern: stream), firstOffset: append.baseOffset, endOffset: append.lastOffset + 1,
                        recordCount: Int32(clamping: append.lastOffset - append.baseOffset + 1), maxTimestamp: -1, batches: append.batches)
                }
                ranges.append(StreamRange(streamId: stream, epoch: first.epoch, startOffset: first.baseOffset, endOffset: last.lastOffset + 1))
            }
            let bytes = try object.finish()
            try await store.put(ObjectKey.make(id: UInt64(bitPattern: objectId), kind: .streamSet), bytes)
            let committed = try await writer.writeAndWait(
                .commitObject(ObjectCommit(objectId: objectId, size: Int64(bytes.readableBytes), ranges: ranges), compactedSources: [], now: wallClockMillis()),
                metadata: metadata)
            guard case .ok = committed else {
                let code = committed.errorCode == MetadataErrorCode.fencedLeaderEpoch ? KafkaErrorCode.fencedLeaderEpoch : .notLeaderOrFollower
                return WALCallError(code: code.rawValue, message: "commitObject answered \(committed)")
            }
            uploads += 1
            return nil
        } catch {
            logger.warning("WAL-bypass upload failed", metadata: ["error": "\(error)"])
            return WALCallError(code: KafkaErrorCode.notLeaderOrFollower.rawValue, message: "WAL-bypass upload failed: \(error)")
        }
    }

}
