import ClusterMetadata
import ControllerClient
import EventLoopTimers
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import NIOCore

/// Taking over a partition's stream when leadership arrives, and learning its durable end again
/// after a failed append: the I/O half of `ReplicaManager`, driven by `PartitionLeadership`'s
/// `.takeOver` and `.resync` actions.
extension ReplicaManager {
    /// The WAL writer this broker appends `stream` through: the stream's current writer when it is a
    /// live writer of this zone, else the lowest live writer of this zone, else any live writer.
    static func chooseWriter(_ state: MetadataState, zone: String, current: NodeID) -> NodeID? {
        let writers = state.sortedNodes.filter { $0.kind == .walWriter && $0.state == .active }
        if let node = writers.first(where: { $0.id == current }), node.zone == zone { return current }
        return writers.first(where: { $0.zone == zone })?.id ?? writers.first?.id
    }

    static func endpoint(_ state: MetadataState, _ node: NodeID) -> KafkaEndpoint? {
        guard let record = state.nodes[node], let parsed = try? parseEndpoint(record.registration.listener) else { return nil }
        return parsed
    }

    /// Fences the stream at the writer holding its tail and recovers the tail, then accepts writes
    /// (DESIGN §6 "Leader change"). Retries until it succeeds or leadership moves on.
    func takeOver(_ partition: Partition) async {
        var backoff = Duration.milliseconds(50)
        while !Task.isCancelled, isCurrent(partition) {
            do {
                try await recover(partition)
                return
            } catch let error as WALCallError where error.code == KafkaErrorCode.fencedLeaderEpoch.rawValue {
                logger.info("a newer leader fenced the stream", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)"])
                return
            } catch {
                logger.warning(
                    "taking over the partition failed; retrying",
                    metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "error": "\(error)"])
            }
            do { try await LoopTimers.sleep(for: backoff) } catch { return }
            backoff = min(backoff * 2, .seconds(1))
        }
    }

    struct TakeOverError: Error, CustomStringConvertible {
        var description: String
    }

    func recover(_ partition: Partition) async throws {
        let state = await metadata.state
        guard isCurrent(partition) else { return }
        guard let stream = state.streams[partition.streamId] else { throw TakeOverError(description: "stream \(partition.streamId) not in metadata yet") }
        guard stream.epoch == partition.epoch else {
            throw TakeOverError(description: "metadata has stream epoch \(stream.epoch), leading with \(partition.epoch)")
        }
        if bypass != nil {
            // Everything acknowledged is committed: the stream continues at its committed end, and a
            // stale leader's late commit is refused by epoch at the controller.
            let fresh = try await barrier(partition, writer: -1)
            let producers = try await rebuildProducers(
                stream: partition.streamId, writer: -1, logStart: fresh.logStartOffset, end: fresh.committedEnd)
            guard isCurrent(partition), !Task.isCancelled else { return }
            becomeReady(partition, writer: -1, connection: nil, end: fresh.committedEnd, logStart: fresh.logStartOffset, producers: producers)
            return
        }
        guard var chosen = Self.chooseWriter(state, zone: zone, current: stream.walWriter) else {
            throw TakeOverError(description: "no live WAL writer")
        }
        let previous = stream.walWriter
        var durableEnd: Int64 = -1
        if previous != -1, state.nodes[previous] != nil {
            guard let endpoint = Self.endpoint(state, previous) else { throw TakeOverError(description: "WAL writer \(previous) has no endpoint") }
            durableEnd = try await wal.fence(endpoint, stream: partition.streamId, epoch: partition.epoch)
        }
        // The committed end must be read after the fence, from an image that has every commit made
        // before it: a writer that uploaded, trimmed and restarted answers -1 and only the metadata
        // knows where the stream ends.
        let usable = previous != -1 && state.nodes[previous]?.state == .active ? previous : chosen
        let fresh = try await barrier(partition, writer: usable)
        var end = max(fresh.committedEnd, durableEnd)
        if previous != -1, previous != chosen, durableEnd > fresh.committedEnd, let endpoint = Self.endpoint(state, previous) {
            // The tail moves to another writer: have the old one commit it first, so the new
            // writer's first upload continues exactly where the committed stream ends.
            try await wal.flush(endpoint, stream: partition.streamId, timeout: .seconds(10))
            end = try await waitForCommittedEnd(partition.streamId, atLeast: durableEnd)
        }
        if chosen != usable {
            guard let endpoint = Self.endpoint(state, chosen) else { throw TakeOverError(description: "WAL writer \(chosen) has no endpoint") }
            let held = try await wal.fence(endpoint, stream: partition.streamId, epoch: partition.epoch)
            if held != -1, held != end {
                // That writer still remembers an older stretch of this stream; keep the previous writer.
                guard usable == previous else {
                    throw TakeOverError(description: "WAL writer \(chosen) holds the stream up to \(held), expected \(end)")
                }
                chosen = previous
            } else {
                _ = try await barrier(partition, writer: chosen)
            }
        }
        guard let endpoint = Self.endpoint(state, chosen) else { throw TakeOverError(description: "WAL writer \(chosen) has no endpoint") }
        let producers = try await rebuildProducers(
            stream: partition.streamId, writer: chosen, logStart: fresh.logStartOffset, end: end)
        let connection = try await wal.appendConnection(endpoint)
        guard isCurrent(partition), !Task.isCancelled else { return }
        becomeReady(partition, writer: chosen, connection: connection, end: end, logStart: fresh.logStartOffset, producers: producers)
    }

    /// Records `writer` as the stream's WAL writer at the controller and waits until the image has
    /// applied it; returns the stream as that image has it. Being a controller write, it orders
    /// everything committed before it (e.g. a writer's last upload) into the returned record.
    func barrier(_ partition: Partition, writer node: NodeID) async throws -> StreamRecord {
        let (result, index) = try await writer.writeWithIndex(.setStreamWriter(streamId: partition.streamId, epoch: partition.epoch, writer: node))
        if case .error(let error) = result {
            if error.code == MetadataErrorCode.fencedLeaderEpoch { throw WALCallError(code: KafkaErrorCode.fencedLeaderEpoch.rawValue, message: error.message) }
            throw TakeOverError(description: "setStreamWriter: \(error)")
        }
        guard await metadata.waitForVersion(index, timeout: .seconds(10)) else {
            throw TakeOverError(description: "metadata image did not reach version \(index)")
        }
        guard let stream = await metadata.state.streams[partition.streamId] else {
            throw TakeOverError(description: "stream \(partition.streamId) deleted")
        }
        return stream
    }

    /// Waits until the metadata image shows the stream committed up to `offset`; returns the committed end.
    func waitForCommittedEnd(_ stream: StreamID, atLeast offset: Int64) async throws -> Int64 {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(15))
        while clock.now < deadline {
            let state = await metadata.state
            guard let record = state.streams[stream] else { throw TakeOverError(description: "stream \(stream) deleted") }
            if record.committedEnd >= offset { return record.committedEnd }
            _ = await metadata.waitForApplied(after: state.lastAppliedIndex, timeout: .milliseconds(500))
            try Task.checkCancellation()
        }
        throw TakeOverError(description: "stream \(stream) not committed up to \(offset) in time")
    }

    /// After a failed append the stream's durable end at the writer is unknown: learn it again
    /// through a fence at the same epoch, then accept writes from there.
    func resync(_ partition: Partition) async {
        var backoff = Duration.milliseconds(20)
        while !Task.isCancelled, isCurrent(partition) {
            let state = knownState
            if bypass != nil {
                // Whatever was committed is the stream now.
                do {
                    let stream = try await barrier(partition, writer: -1)
                    guard isCurrent(partition) else { return }
                    let producers = try await rebuildProducers(
                        stream: partition.streamId, writer: -1, logStart: stream.logStartOffset, end: stream.committedEnd)
                    guard isCurrent(partition) else { return }
                    partition.producers = producers
                    perform(leaderState.resynced(partition.lease, end: stream.committedEnd))
                    return
                } catch {
                    logger.warning("resync failed; retrying", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "error": "\(error)"])
                }
                do { try await LoopTimers.sleep(for: backoff) } catch { return }
                backoff = min(backoff * 2, .seconds(1))
                continue
            }
            do {
                guard let endpoint = Self.endpoint(state, partition.writer) else { throw TakeOverError(description: "WAL writer \(partition.writer) unknown") }
                let durableEnd = try await wal.fence(endpoint, stream: partition.streamId, epoch: partition.epoch)
                let fresh = try await barrier(partition, writer: partition.writer)
                let led = leaderState.partition(partition.key)
                let end = max(durableEnd, fresh.committedEnd, led?.highWatermark ?? 0)
                // Appends that failed may or may not be durable: learn the producers' state from what is.
                let producers = try await rebuildProducers(
                    stream: partition.streamId, writer: partition.writer, logStart: led?.logStartOffset ?? fresh.logStartOffset, end: end)
                let connection = try await wal.appendConnection(endpoint)
                guard isCurrent(partition) else { return }
                partition.producers = producers
                partition.connection = connection
                perform(leaderState.resynced(partition.lease, end: end))
                logger.info("append path recovered", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "end_offset": "\(end)"])
                return
            } catch let error as WALCallError where error.code == KafkaErrorCode.fencedLeaderEpoch.rawValue {
                logger.info("stream fenced by a newer leader", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)"])
                return
            } catch {
                logger.warning("resync failed; retrying", metadata: ["partition": "\(partition.key.topic)-\(partition.key.partition)", "error": "\(error)"])
            }
            do { try await LoopTimers.sleep(for: backoff) } catch { return }
            backoff = min(backoff * 2, .seconds(1))
        }
    }

    /// How far back from the end a new leader (or a resync) reads to rebuild idempotent producers'
    /// state: well beyond the five in-flight batches a producer may retry.
    static let producerScanOffsets: Int64 = 20_000

    /// How often (at most) a partition's expired producers are looked for, on its next append;
    /// half the expiry when that is shorter.
    static let producerSweepIntervalMs: Int64 = 60_000

    /// Producer state rebuilt from the durable batches in [max(logStart, end - producerScanOffsets), end).
    func rebuildProducers(stream: StreamID, writer: NodeID, logStart: Int64, end: Int64) async throws -> ProducerStateTable {
        var table = ProducerStateTable()
        var offset = max(logStart, end - Self.producerScanOffsets)
        var rounds = 0
        while offset < end, rounds < 100_000 {
            rounds += 1
            let state = await metadata.state
            guard let record = state.streams[stream] else { break }
            let bytes: ByteBuffer
            if offset >= record.committedEnd {
                guard let endpoint = Self.endpoint(state, writer) else { throw TakeOverError(description: "WAL writer \(writer) unknown") }
                do {
                    bytes = try await wal.read(endpoint, stream: stream, from: offset, maxBytes: 4 << 20)
                } catch let error as WALCallError where error.code == KafkaErrorCode.offsetNotAvailable.rawValue {
                    // Uploaded meanwhile: read it from its object once the commit shows.
                    _ = await metadata.waitForApplied(after: state.lastAppliedIndex, timeout: .milliseconds(500))
                    continue
                }
            } else {
                bytes = try await committed.readCommitted(stream: stream, from: offset, maxBytes: 4 << 20, state: state)
            }
            var iterator = RecordSetIterator(bytes)
            var progressed = false
            while let batch = try iterator.next(), batch.baseOffset < end {
                guard batch.lastOffset >= offset else { continue }
                table.replay(batch, now: now())
                offset = batch.nextOffset
                progressed = true
            }
            if !progressed { break }
        }
        return table
    }
}
