import ClusterMetadata
import KafkaProtocol
import KafkaRecords
import NIOCore

/// Reads a led partition's acknowledged batches (DESIGN §5): the log cache for the tail, the WAL
/// writer for durable data not yet in an object, object storage for the rest.
enum PartitionReads {
    struct Failure: Error {
        var code: KafkaErrorCode
        var message: String
    }

    /// Whole batches holding offsets from `offset` below the high watermark, about `maxBytes` (at least
    /// one batch when any exists). Empty at the high watermark.
    static func read(
        _ key: PartitionKey, view: PartitionView, from offset: Int64, maxBytes: Int, context: BrokerContext
    ) async throws(Failure) -> ByteBuffer {
        let limit = view.highWatermark
        guard offset < limit else { return ByteBuffer() }
        if let cached = await context.replicas.cachedRead(key, from: offset, maxBytes: maxBytes, limit: limit) {
            return trim(cached, from: offset, limit: limit, maxBytes: maxBytes)
        }
        var attempts = 0
        while true {
            attempts += 1
            let state = await context.metadata.state
            guard let stream = state.streams[view.streamId] else {
                throw Failure(code: .unknownTopicOrPartition, message: "stream \(view.streamId) is gone")
            }
            do {
                if offset >= stream.committedEnd {
                    guard let endpoint = ReplicaManager.endpoint(state, view.walWriter) else {
                        throw Failure(code: .notLeaderOrFollower, message: "WAL writer \(view.walWriter) unknown")
                    }
                    let bytes = try await context.wal.read(endpoint, stream: view.streamId, from: offset, maxBytes: Int32(clamping: maxBytes))
                    return trim([bytes], from: offset, limit: limit, maxBytes: maxBytes)
                }
                let bytes = try await context.committed.readCommitted(stream: view.streamId, from: offset, maxBytes: maxBytes, state: state)
                return trim([bytes], from: offset, limit: limit, maxBytes: maxBytes)
            } catch let failure as Failure {
                throw failure
            } catch let error as WALCallError where error.code == KafkaErrorCode.offsetNotAvailable.rawValue && attempts < 20 {
                // Uploaded and trimmed since this image: wait for the commit to show, then read the object.
                _ = await context.metadata.waitForApplied(after: state.lastAppliedIndex, timeout: .milliseconds(500))
            } catch {
                if attempts < 3 {
                    _ = await context.metadata.waitForApplied(after: state.lastAppliedIndex, timeout: .milliseconds(200))
                    continue
                }
                throw Failure(code: .kafkaStorageError, message: "\(error)")
            }
        }
    }

    /// Concatenates `parts`, dropping batches that end before `offset` or start at or after `limit`,
    /// and stopping at `maxBytes` after the first batch.
    static func trim(_ parts: [ByteBuffer], from offset: Int64, limit: Int64, maxBytes: Int) -> ByteBuffer {
        var out = ByteBuffer()
        for part in parts {
            var iterator = RecordSetIterator(part)
            while let batch = try? iterator.next() {
                if batch.lastOffset < offset { continue }
                if batch.baseOffset >= limit { return out }
                if out.readableBytes > 0, out.readableBytes + batch.sizeInBytes > maxBytes { return out }
                var bytes = batch.bytes
                out.writeBuffer(&bytes)
            }
        }
        return out
    }
}
