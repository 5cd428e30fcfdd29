import KafkaProtocol

/// Streams, objects and producer ids: the commands of the data path (stream writers and trims,
/// object prepare, commit, compaction, release and deletion) and producer-id blocks.
extension MetadataState {
    // MARK: Streams

    func checkStreamEpoch(_ stream: StreamRecord, _ epoch: LeaderEpoch) -> MetadataError? {
        if epoch < stream.epoch {
            return MetadataError(MetadataErrorCode.fencedLeaderEpoch, "stream \(stream.id) epoch \(epoch) < \(stream.epoch)")
        }
        if epoch > stream.epoch {
            return MetadataError(MetadataErrorCode.unknownLeaderEpoch, "stream \(stream.id) epoch \(epoch) > \(stream.epoch)")
        }
        return nil
    }

    mutating func setStreamWriter(streamId: StreamID, epoch: LeaderEpoch, writer: NodeID) -> MetadataResult {
        guard let stream = streams[streamId] else {
            return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(streamId)")
        }
        if let error = checkStreamEpoch(stream, epoch) { return .error(error) }
        if writer != -1 {
            guard let node = nodes[writer], node.kind == .walWriter, node.state == .active else {
                return Self.fail(MetadataErrorCode.brokerNotAvailable, "node \(writer) is not an active WAL writer")
            }
        }
        streams[streamId]?.walWriter = writer
        return .ok
    }

    /// Retention/DeleteRecords. The start offset only moves forward and never past the committed
    /// end; a DeleteRecords offset beyond it (tail still in the WAL, already checked against the
    /// high watermark by the partition leader) is kept as `requestedStart`, shown to clients as the
    /// log start offset at once, and the start offset catches up as commits advance the end.
    mutating func trimStream(_ streamId: StreamID, newStart: Int64, now: Millis) -> MetadataResult {
        guard let stream = streams[streamId] else {
            return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(streamId)")
        }
        guard newStart >= 0 else { return Self.fail(MetadataErrorCode.offsetOutOfRange, "negative start offset") }
        guard newStart > stream.logStartOffset else { return .ok }
        streams[streamId]?.requestedStart = newStart
        advanceStart(streamId, now: now)
        return .ok
    }

    /// Moves the start offset toward `requestedStart` as far as the committed end allows, dropping
    /// index entries that fall below it and destroying objects nothing reaches any more.
    mutating func advanceStart(_ streamId: StreamID, now: Millis) {
        guard let stream = streams[streamId] else { return }
        let start = min(stream.requestedStart, stream.committedEnd)
        guard start > stream.startOffset else { return }
        streams[streamId]?.startOffset = start
        guard let locations = streamObjects[streamId] else { return }
        let dropped = locations.filter { $0.endOffset <= start }
        guard !dropped.isEmpty else { return }
        setLocations(streamId, locations.filter { $0.endOffset > start })
        destroyUnreachable(Set(dropped.map(\.objectId)), now: now)
    }

    // MARK: Objects

    mutating func prepareObject(kind: ObjectKind, deadline: Millis) -> MetadataResult {
        guard nextObjectId < ObjectID.max else { return Self.fail(MetadataErrorCode.unknownServerError, "object ids exhausted") }
        let id = nextObjectId
        nextObjectId += 1
        objects[id] = ObjectRecord(
            id: id, kind: kind, state: .prepared, deadline: deadline, size: 0, ranges: [], committedAt: 0, destroyedAt: 0)
        return .objectPrepared(id)
    }

    /// Whether any range of a committed object is still reachable from a live stream.
    func isReachable(_ object: ObjectRecord) -> Bool {
        object.ranges.contains { range in
            guard let stream = streams[range.streamId] else { return false }
            return range.endOffset > stream.startOffset
        }
    }

    mutating func destroyUnreachable(_ ids: Set<ObjectID>, now: Millis) {
        for id in ids.sorted() {
            guard let object = objects[id], object.state == .committed, !isReachable(object) else { continue }
            destroy(id, now: now)
        }
    }

    /// Empty lists are dropped so equal states compare equal however they were reached.
    mutating func setLocations(_ streamId: StreamID, _ locations: [ObjectLocation]) {
        streamObjects[streamId] = locations.isEmpty ? nil : locations
    }

    mutating func destroy(_ id: ObjectID, now: Millis) {
        guard let object = objects[id] else { return }
        objects[id]?.state = .destroyed
        objects[id]?.destroyedAt = now
        for streamId in Set(object.ranges.map(\.streamId)).sorted() {
            streamObjects[streamId]?.removeAll { $0.objectId == id }
            if streamObjects[streamId]?.isEmpty == true { streamObjects[streamId] = nil }
        }
    }

    /// Checks that `commit` may turn a prepared object into a committed one.
    func checkCommittable(_ commit: ObjectCommit, now: Millis) -> MetadataError? {
        guard let object = objects[commit.objectId] else {
            return MetadataError(MetadataErrorCode.invalidRequest, "unknown object \(commit.objectId)")
        }
        switch object.state {
        case .prepared: break
        case .committed: return MetadataError(MetadataErrorCode.invalidRequest, "object \(commit.objectId) already committed")
        case .destroyed: return MetadataError(MetadataErrorCode.requestTimedOut, "object \(commit.objectId) expired or destroyed")
        }
        guard now < object.deadline else {
            return MetadataError(MetadataErrorCode.requestTimedOut, "object \(commit.objectId) is past its deadline")
        }
        guard object.kind != .routed else {
            return MetadataError(MetadataErrorCode.invalidRequest, "routed objects carry no stream ranges")
        }
        guard commit.size >= 0, !commit.ranges.isEmpty else {
            return MetadataError(MetadataErrorCode.invalidRequest, "object \(commit.objectId) has no ranges or a negative size")
        }
        if object.kind == .stream, Set(commit.ranges.map(\.streamId)).count != 1 {
            return MetadataError(MetadataErrorCode.invalidRequest, "a stream object holds exactly one stream")
        }
        for range in commit.ranges where range.startOffset < 0 || range.endOffset <= range.startOffset {
            return MetadataError(MetadataErrorCode.invalidRequest, "empty or negative range in object \(commit.objectId)")
        }
        return nil
    }

    mutating func record(_ commit: ObjectCommit, now: Millis) {
        objects[commit.objectId]?.state = .committed
        objects[commit.objectId]?.size = commit.size
        objects[commit.objectId]?.ranges = commit.ranges
        objects[commit.objectId]?.committedAt = now
        for range in commit.ranges {
            streamObjects[range.streamId, default: []].append(
                ObjectLocation(objectId: commit.objectId, startOffset: range.startOffset, endOffset: range.endOffset))
        }
    }

    mutating func commitAppend(_ commit: ObjectCommit, now: Millis) -> MetadataResult {
        // A retried commit whose first answer was lost (the object may since have been compacted
        // away): only committed objects carry ranges, so matching ranges mean it already happened.
        if let object = objects[commit.objectId], object.state != .prepared, !object.ranges.isEmpty,
            object.size == commit.size, object.ranges == commit.ranges
        {
            return .ok
        }
        if let error = checkCommittable(commit, now: now) { return .error(error) }
        var ends: [StreamID: Int64] = [:]
        for range in commit.ranges {
            guard let stream = streams[range.streamId] else {
                return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(range.streamId)")
            }
            if let error = checkStreamEpoch(stream, range.epoch) { return .error(error) }
            let expected = ends[range.streamId] ?? stream.committedEnd
            guard range.startOffset == expected else {
                return Self.fail(
                    MetadataErrorCode.offsetOutOfRange,
                    "stream \(range.streamId) range starts at \(range.startOffset), committed end is \(expected)")
            }
            ends[range.streamId] = range.endOffset
        }
        record(commit, now: now)
        for streamId in ends.keys.sorted() {
            streams[streamId]?.committedEnd = ends[streamId] ?? 0
            advanceStart(streamId, now: now)
        }
        return .ok
    }

    /// Sorted, merged [start, end) intervals.
    static func union(_ intervals: [(Int64, Int64)]) -> [(Int64, Int64)] {
        var merged: [(Int64, Int64)] = []
        for interval in intervals.sorted(by: { $0 < $1 }) {
            if let last = merged.last, interval.0 <= last.1 {
                merged[merged.count - 1].1 = max(last.1, interval.1)
            } else {
                merged.append(interval)
            }
        }
        return merged
    }

    /// Whether every interval of `inner` lies inside one interval of the merged `outer`.
    static func covers(_ outer: [(Int64, Int64)], _ inner: [(Int64, Int64)]) -> Bool {
        inner.allSatisfy { piece in outer.contains { $0.0 <= piece.0 && piece.1 <= $0.1 } }
    }

    /// A compaction: outputs replace sources in one step. Outputs may only hold offsets the sources
    /// held, and must hold every offset of the sources that is still reachable, so no reader loses
    /// data; the sources become destroyed.
    mutating func commitCompaction(_ outputs: [ObjectCommit], sources: [ObjectID], now: Millis) -> MetadataResult {
        guard !sources.isEmpty, Set(sources).count == sources.count else {
            return Self.fail(MetadataErrorCode.invalidRequest, "compaction needs distinct sources")
        }
        guard Set(outputs.map(\.objectId)).count == outputs.count else {
            return Self.fail(MetadataErrorCode.invalidRequest, "duplicate compaction output")
        }
        var sourceIntervals: [StreamID: [(Int64, Int64)]] = [:]
        for id in sources {
            guard let object = objects[id], object.state == .committed else {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction source \(id) is not a committed object")
            }
            for range in object.ranges { sourceIntervals[range.streamId, default: []].append((range.startOffset, range.endOffset)) }
        }
        var outputIntervals: [StreamID: [(Int64, Int64)]] = [:]
        for output in outputs {
            if let error = checkCommittable(output, now: now) { return .error(error) }
            for range in output.ranges { outputIntervals[range.streamId, default: []].append((range.startOffset, range.endOffset)) }
        }
        for streamId in outputIntervals.keys.sorted() {
            let pieces = (outputIntervals[streamId] ?? []).sorted(by: { $0 < $1 })
            guard streams[streamId] != nil else {
                return Self.fail(MetadataErrorCode.unknownTopicOrPartition, "unknown stream \(streamId)")
            }
            for (previous, next) in zip(pieces, pieces.dropFirst()) where next.0 < previous.1 {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction outputs overlap on stream \(streamId)")
            }
            guard Self.covers(Self.union(sourceIntervals[streamId] ?? []), pieces) else {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction output holds offsets its sources do not on stream \(streamId)")
            }
        }
        for streamId in sourceIntervals.keys.sorted() {
            guard let stream = streams[streamId] else { continue }
            let reachable = Self.union(sourceIntervals[streamId] ?? []).compactMap { interval -> (Int64, Int64)? in
                let start = max(interval.0, stream.startOffset)
                return start < interval.1 ? (start, interval.1) : nil
            }
            guard Self.covers(Self.union(outputIntervals[streamId] ?? []), reachable) else {
                return Self.fail(MetadataErrorCode.invalidRequest, "compaction would drop reachable offsets of stream \(streamId)")
            }
        }
        for id in sources { destroy(id, now: now) }
        for output in outputs { record(output, now: now) }
        for streamId in outputIntervals.keys.sorted() {
            streamObjects[streamId]?.sort { ($0.startOffset, $0.endOffset, $0.objectId) < ($1.startOffset, $1.endOffset, $1.objectId) }
        }
        for streamId in outputIntervals.keys.sorted() {
            guard let start = streams[streamId]?.startOffset, let locations = streamObjects[streamId] else { continue }
            setLocations(streamId, locations.filter { $0.endOffset > start })
        }
        destroyUnreachable(Set(outputs.map(\.objectId)), now: now)
        return .ok
    }

    mutating func expirePrepared(now: Millis) -> MetadataResult {
        var expired: [ObjectID] = []
        for id in objects.keys.sorted() {
            guard let object = objects[id], object.state == .prepared, object.deadline <= now else { continue }
            destroy(id, now: now)
            expired.append(id)
        }
        return .objectsExpired(expired)
    }

    /// Destroys prepared objects before their deadline (claimed routed objects, abandoned uploads).
    mutating func releaseObjects(_ ids: [ObjectID], now: Millis) -> MetadataResult {
        for id in ids {
            guard let object = objects[id], object.state != .committed else {
                return Self.fail(MetadataErrorCode.invalidRequest, "object \(id) is unknown or committed")
            }
        }
        for id in ids where objects[id]?.state == .prepared { destroy(id, now: now) }
        return .ok
    }

    mutating func objectsDeleted(_ ids: [ObjectID]) -> MetadataResult {
        for id in ids {
            if let object = objects[id], object.state != .destroyed {
                return Self.fail(MetadataErrorCode.invalidRequest, "object \(id) is \(object.state), not destroyed")
            }
        }
        // Unknown ids were already forgotten by an earlier (retried) command.
        for id in ids { objects[id] = nil }
        return .ok
    }

    // MARK: Producer ids

    mutating func allocateProducerIds(_ brokerId: NodeID, _ incarnation: Int64) -> MetadataResult {
        guard let node = nodes[brokerId], node.kind == .broker else {
            return Self.fail(MetadataErrorCode.brokerIdNotRegistered, "broker \(brokerId) is not registered")
        }
        guard node.incarnation == incarnation else {
            return Self.fail(MetadataErrorCode.staleBrokerEpoch, "broker \(brokerId) incarnation \(incarnation) is stale")
        }
        let first = nextProducerId
        guard first <= Int64.max - Int64(Self.producerIdBlockSize) else {
            return Self.fail(MetadataErrorCode.unknownServerError, "producer ids exhausted")
        }
        nextProducerId += Int64(Self.producerIdBlockSize)
        return .producerIds(firstId: first, count: Self.producerIdBlockSize)
    }
}
