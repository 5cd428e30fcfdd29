import ClusterMetadata
import NIOCore
import ObjectStorage

/// Key compaction of topics whose `cleanup.policy` includes `compact`.
extension Compactor {
    /// For each of this shard's compacted partitions with new data: the leading run of its stream
    /// objects (stream-set objects are split first) is read, blocks younger than
    /// `min.compaction.lag.ms` are left as they are, and the rest is cleaned (`KeyCompaction`);
    /// when at least `min.cleanable.dirty.ratio` of their records would go, the cleaned objects
    /// replace the run in one `commitCompaction`, offsets unchanged.
    func cleanCompactedTopics(shard: CompactorShard, _ report: inout PassReport) async throws {
        let state = await metadata.current()
        checkedEnds = checkedEnds.filter { state.streams[$0.key] != nil }
        for streamId in state.streams.keys.sorted() where shard.owns(stream: streamId) {
            guard let stream = state.streams[streamId], let topic = state.topic(id: stream.topicId),
                  let rules = CleaningRules(configs: topic.configs), checkedEnds[streamId] != stream.committedEnd
            else { continue }
            var run: [ObjectRecord] = []
            var inRun: Set<ObjectID> = []
            for location in state.objects(covering: streamId, from: stream.startOffset) where inRun.insert(location.objectId).inserted {
                guard let object = state.objects[location.objectId], object.kind == .stream else { break }
                run.append(object)
            }
            guard !run.isEmpty else { continue }
            let loaded = try await load(run, &report)
            let blocks = try CompactionPlanner.blocks(of: stream, in: state, indexes: loaded.mapValues(\.index), only: Set(run.map(\.id)))
            let clock = now()
            let cleanable = blocks.prefix { clock - $0.entry.maxTimestamp >= rules.minCompactionLagMillis }
            // Blocks held back by the lag are looked at again next pass; otherwise only new data brings this partition back.
            if cleanable.count == blocks.count { checkedEnds[streamId] = stream.committedEnd }
            guard !cleanable.isEmpty else { continue }
            let sources = try cleanable.map { block -> (block: StoredBlock, bytes: ByteBuffer) in
                guard let object = loaded[block.objectId],
                      let bytes = object.bytes.getSlice(at: object.bytes.readerIndex + Int(block.entry.position), length: block.bytes)
                else { throw CompactorError.inconsistent("block of object \(block.objectId) was not loaded") }
                try ObjectIndex.verify(block: bytes, entry: block.entry)
                return (block, bytes)
            }
            let cleaning = try KeyCompaction.clean(sources, rules: rules, now: clock)
            guard cleaning.recordsAfter < cleaning.recordsBefore, cleaning.dirtyRatio >= rules.minCleanableDirtyRatio else { continue }
            let cleaned = Dictionary(uniqueKeysWithValues: cleaning.blocks.map { ($0.source.startOffset, $0) })
            let epoch = run.flatMap(\.ranges).map(\.epoch).max() ?? stream.epoch
            var planned: [PlannedOutput] = []
            var piece: [StoredBlock] = []
            var bytes = 0
            for block in blocks {
                let size = cleaned[block.startOffset]?.batches.readableBytes ?? block.bytes
                if !piece.isEmpty, bytes + size > settings.streamObjectBytes {
                    planned.append(PlannedOutput(stream: streamId, epoch: epoch, blocks: piece, cleaned: cleaned))
                    piece = []
                    bytes = 0
                }
                piece.append(block)
                bytes += size
            }
            if !piece.isEmpty { planned.append(PlannedOutput(stream: streamId, epoch: epoch, blocks: piece, cleaned: cleaned)) }
            if try await commit(planned, sources: run.map(\.id), loaded: loaded, &report) {
                report.cleanings += 1
                report.cleanedRecords += cleaning.recordsBefore - cleaning.recordsAfter
                logger.info("cleaned a compacted partition", metadata: [
                    "topic": "\(topic.name)", "partition": "\(stream.partition)",
                    "records_before": "\(cleaning.recordsBefore)", "records_after": "\(cleaning.recordsAfter)",
                ])
            }
        }
    }
}
