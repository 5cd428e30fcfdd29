import ClusterMetadata
import Testing

@Suite struct StreamObjectTests {
    /// One broker, one WAL writer (node 10), topics a and b with one partition each.
    func setUp() throws -> (Cluster, StreamRecord, StreamRecord) {
        var cluster = Cluster()
        cluster.register(1)
        cluster.register(10, .walWriter)
        cluster.createTopic("a", partitions: 1)
        cluster.createTopic("b", partitions: 1)
        let a = try #require(cluster.stream("a", 0))
        let b = try #require(cluster.stream("b", 0))
        return (cluster, a, b)
    }

    func range(_ stream: StreamRecord, _ start: Int64, _ end: Int64, epoch: LeaderEpoch? = nil) -> StreamRange {
        StreamRange(streamId: stream.id, epoch: epoch ?? stream.epoch, startOffset: start, endOffset: end)
    }

    @Test func setStreamWriter() throws {
        var (cluster, a, _) = try setUp()
        #expect(cluster.apply(.setStreamWriter(streamId: a.id, epoch: a.epoch, writer: 10)) == .ok)
        #expect(cluster.state.streams[a.id]?.walWriter == 10)
        #expect(cluster.apply(.setStreamWriter(streamId: a.id, epoch: a.epoch - 1, writer: 10)).errorCode == MetadataErrorCode.fencedLeaderEpoch)
        #expect(cluster.apply(.setStreamWriter(streamId: a.id, epoch: a.epoch + 1, writer: 10)).errorCode == MetadataErrorCode.unknownLeaderEpoch)
        #expect(cluster.apply(.setStreamWriter(streamId: a.id, epoch: a.epoch, writer: 1)).errorCode == MetadataErrorCode.brokerNotAvailable)
        #expect(cluster.apply(.setStreamWriter(streamId: 999, epoch: 0, writer: 10)).errorCode == MetadataErrorCode.unknownTopicOrPartition)
        #expect(cluster.apply(.setStreamWriter(streamId: a.id, epoch: a.epoch, writer: -1)) == .ok)
        #expect(cluster.state.streams[a.id]?.walWriter == -1)
    }

    @Test func appendCommitAdvancesEnds() throws {
        var (cluster, a, b) = try setUp()
        let first = cluster.prepare(deadline: 100)
        #expect(cluster.state.objects[first]?.state == .prepared)
        let commit = ObjectCommit(objectId: first, size: 4096, ranges: [range(a, 0, 10), range(b, 0, 3), range(a, 10, 12)])
        #expect(cluster.apply(.commitObject(commit, compactedSources: [], now: 20)) == .ok)
        #expect(cluster.state.streams[a.id]?.committedEnd == 12)
        #expect(cluster.state.streams[b.id]?.committedEnd == 3)
        #expect(cluster.state.objects[first]?.state == .committed)
        #expect(cluster.state.objects[first]?.size == 4096)
        #expect(cluster.state.objects[first]?.committedAt == 20)
        // A retried commit whose answer was lost is accepted without change.
        let before = cluster.state
        #expect(cluster.apply(.commitObject(commit, compactedSources: [], now: 30)) == .ok)
        #expect(content(cluster.state) == content(before))
        cluster.appendRecords("a", 0, count: 5)
        #expect(cluster.state.objects(covering: a.id, from: 0).map { [$0.startOffset, $0.endOffset] } == [[0, 10], [10, 12], [12, 17]])
        #expect(cluster.state.objects(covering: a.id, from: 11).map(\.startOffset) == [10, 12])
        #expect(cluster.state.objects(covering: a.id, from: 17).isEmpty)
    }

    @Test func appendCommitIsAllOrNothing() throws {
        var (cluster, a, b) = try setUp()
        cluster.appendRecords("a", 0, count: 10)
        let id = cluster.prepare(deadline: 100)
        let before = content(cluster.state)
        let bad: [(ObjectCommit, Int16)] = [
            (ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 5), range(a, 11, 12)]), MetadataErrorCode.offsetOutOfRange),
            (ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 5), range(a, 9, 12)]), MetadataErrorCode.offsetOutOfRange),
            (ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 5), range(a, 10, 12, epoch: a.epoch - 1)]), MetadataErrorCode.fencedLeaderEpoch),
            (ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 5), range(a, 10, 12, epoch: a.epoch + 1)]), MetadataErrorCode.unknownLeaderEpoch),
            (ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 5), range(b, 6, 8)]), MetadataErrorCode.offsetOutOfRange),
            (ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 5), StreamRange(streamId: 77, epoch: 0, startOffset: 0, endOffset: 1)]),
             MetadataErrorCode.unknownTopicOrPartition),
            (ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 0)]), MetadataErrorCode.invalidRequest),
            (ObjectCommit(objectId: id, size: 1, ranges: []), MetadataErrorCode.invalidRequest),
            (ObjectCommit(objectId: id, size: -1, ranges: [range(b, 0, 5)]), MetadataErrorCode.invalidRequest),
            (ObjectCommit(objectId: 999, size: 1, ranges: [range(b, 0, 5)]), MetadataErrorCode.invalidRequest),
        ]
        for (commit, code) in bad {
            #expect(cluster.apply(.commitObject(commit, compactedSources: [], now: 50)).errorCode == code)
            #expect(content(cluster.state) == before)
        }
        // Past the deadline the upload is garbage.
        #expect(cluster.apply(.commitObject(
            ObjectCommit(objectId: id, size: 1, ranges: [range(b, 0, 5)]), compactedSources: [], now: 100)).errorCode
            == MetadataErrorCode.requestTimedOut)
        #expect(content(cluster.state) == before)
    }

    @Test func leaderChangeFencesOldEpochCommits() throws {
        var cluster = Cluster()
        cluster.register(1)
        cluster.register(2)
        cluster.createTopic("t", partitions: 1)
        guard let old = cluster.stream("t", 0) else { return }
        let to: NodeID = cluster.state.partition(PartitionKey(topic: "t", partition: 0))?.leader == 1 ? 2 : 1
        cluster.apply(.moveLeader(topic: "t", partition: 0, to: to))
        let id = cluster.prepare()
        #expect(cluster.apply(.commitObject(
            ObjectCommit(objectId: id, size: 1, ranges: [range(old, 0, 5)]), compactedSources: [], now: 1)).errorCode
            == MetadataErrorCode.fencedLeaderEpoch)
        #expect(cluster.appendRecords("t", 0, count: 5) == .ok)
    }

    @Test func objectKindsAreChecked() throws {
        var (cluster, a, b) = try setUp()
        let routed = cluster.prepare(.routed)
        #expect(cluster.apply(.commitObject(ObjectCommit(objectId: routed, size: 1, ranges: [range(a, 0, 1)]), compactedSources: [], now: 1)).errorCode
            == MetadataErrorCode.invalidRequest)
        let single = cluster.prepare(.stream)
        #expect(cluster.apply(.commitObject(
            ObjectCommit(objectId: single, size: 1, ranges: [range(a, 0, 1), range(b, 0, 1)]), compactedSources: [], now: 1)).errorCode
            == MetadataErrorCode.invalidRequest)
        #expect(cluster.apply(.commitObject(ObjectCommit(objectId: single, size: 1, ranges: [range(a, 0, 1)]), compactedSources: [], now: 1)) == .ok)
        // A claimed routed object is released early and becomes due for deletion.
        #expect(cluster.apply(.releaseObjects([routed], now: 5)) == .ok)
        #expect(cluster.state.objects[routed]?.state == .destroyed)
        #expect(cluster.apply(.releaseObjects([single], now: 5)).errorCode == MetadataErrorCode.invalidRequest)
        #expect(cluster.apply(.releaseObjects([4242], now: 5)).errorCode == MetadataErrorCode.invalidRequest)
    }

    @Test func trimMovesForwardOnlyAndDestroysUnreachableObjects() throws {
        var (cluster, a, b) = try setUp()
        cluster.appendRecords("a", 0, count: 10)  // [0,10)
        let shared = cluster.prepare()
        cluster.apply(.commitObject(ObjectCommit(objectId: shared, size: 1, ranges: [range(a, 10, 20), range(b, 0, 5)]), compactedSources: [], now: 1))
        let firstId = cluster.state.objects(covering: a.id, from: 0).first?.objectId ?? -1
        #expect(cluster.apply(.trimStream(streamId: a.id, newStart: 10, now: 40)) == .ok)
        #expect(cluster.state.streams[a.id]?.startOffset == 10)
        #expect(cluster.state.objects[firstId]?.state == .destroyed)
        #expect(cluster.state.objects[firstId]?.destroyedAt == 40)
        #expect(cluster.apply(.trimStream(streamId: a.id, newStart: 5, now: 41)) == .ok)
        #expect(cluster.state.streams[a.id]?.startOffset == 10)
        // Trimming a past the shared object leaves it alive for b.
        #expect(cluster.apply(.trimStream(streamId: a.id, newStart: 20, now: 42)) == .ok)
        #expect(cluster.state.objects[shared]?.state == .committed)
        #expect(cluster.state.objects(covering: a.id, from: 0).isEmpty)
        #expect(cluster.state.objects(covering: b.id, from: 0).map(\.objectId) == [shared])
        #expect(cluster.apply(.trimStream(streamId: b.id, newStart: 5, now: 43)) == .ok)
        #expect(cluster.state.objects[shared]?.state == .destroyed)
        #expect(cluster.apply(.trimStream(streamId: b.id, newStart: -1, now: 43)).errorCode == MetadataErrorCode.offsetOutOfRange)
        #expect(cluster.apply(.trimStream(streamId: 999, newStart: 1, now: 43)).errorCode == MetadataErrorCode.unknownTopicOrPartition)
    }

    @Test func deleteRecordsBeyondTheCommittedEndWaitsForCommits() throws {
        var (cluster, a, _) = try setUp()
        cluster.appendRecords("a", 0, count: 10)
        #expect(cluster.apply(.trimStream(streamId: a.id, newStart: 25, now: 1)) == .ok)
        #expect(cluster.state.streams[a.id]?.startOffset == 10)
        #expect(cluster.state.streams[a.id]?.logStartOffset == 25)
        cluster.appendRecords("a", 0, count: 10)  // [10,20): entirely below 25, unreachable at once
        #expect(cluster.state.streams[a.id]?.startOffset == 20)
        #expect(cluster.state.objects(covering: a.id, from: 0).isEmpty)
        #expect(cluster.state.objects(in: .committed).isEmpty)
        cluster.appendRecords("a", 0, count: 10)  // [20,30)
        #expect(cluster.state.streams[a.id]?.startOffset == 25)
        #expect(cluster.state.objects(covering: a.id, from: 0).map(\.startOffset) == [20])
    }

    @Test func compactionReplacesSourcesAtomically() throws {
        var (cluster, a, b) = try setUp()
        let s1 = cluster.prepare()
        cluster.apply(.commitObject(ObjectCommit(objectId: s1, size: 1, ranges: [range(a, 0, 10), range(b, 0, 4)]), compactedSources: [], now: 1))
        let s2 = cluster.prepare()
        cluster.apply(.commitObject(ObjectCommit(objectId: s2, size: 1, ranges: [range(a, 10, 20), range(b, 4, 8)]), compactedSources: [], now: 1))
        let outA = cluster.prepare(.stream)
        let outB = cluster.prepare(.stream)
        let before = content(cluster.state)

        // Outputs missing b's data would lose reachable offsets.
        let onlyA = ObjectCommit(objectId: outA, size: 1, ranges: [range(a, 0, 20)])
        #expect(cluster.apply(.commitObject(onlyA, compactedSources: [s1, s2], now: 2)).errorCode == MetadataErrorCode.invalidRequest)
        // Offsets no source holds.
        let tooMuch = ObjectCommit(objectId: outB, size: 1, ranges: [range(b, 0, 9)])
        #expect(cluster.apply(.commitCompaction(outputs: [onlyA, tooMuch], sources: [s1, s2], now: 2)).errorCode == MetadataErrorCode.invalidRequest)
        // Overlapping outputs.
        let overlapping = ObjectCommit(objectId: outB, size: 1, ranges: [range(b, 0, 8), range(b, 7, 8)])
        #expect(cluster.apply(.commitCompaction(outputs: [onlyA, overlapping], sources: [s1, s2], now: 2)).errorCode == MetadataErrorCode.invalidRequest)
        // Sources must be committed and distinct.
        #expect(cluster.apply(.commitCompaction(outputs: [onlyA], sources: [s1, s1], now: 2)).errorCode == MetadataErrorCode.invalidRequest)
        #expect(cluster.apply(.commitCompaction(outputs: [onlyA], sources: [outB], now: 2)).errorCode == MetadataErrorCode.invalidRequest)
        #expect(content(cluster.state) == before)

        let fullB = ObjectCommit(objectId: outB, size: 1, ranges: [range(b, 0, 8)])
        #expect(cluster.apply(.commitCompaction(outputs: [onlyA, fullB], sources: [s1, s2], now: 3)) == .ok)
        #expect(cluster.state.objects[s1]?.state == .destroyed)
        #expect(cluster.state.objects[s2]?.state == .destroyed)
        #expect(cluster.state.objects[s1]?.destroyedAt == 3)
        #expect(cluster.state.objects(covering: a.id, from: 5).map(\.objectId) == [outA])
        #expect(cluster.state.objects(covering: b.id, from: 0).map(\.objectId) == [outB])
        #expect(cluster.state.streams[a.id]?.committedEnd == 20)
        // Appends continue after the compacted range.
        #expect(cluster.appendRecords("a", 0, count: 1) == .ok)
        // A WAL writer retrying the first commit after its source was compacted away still gets success.
        let retried = ObjectCommit(objectId: s1, size: 1, ranges: [range(a, 0, 10), range(b, 0, 4)])
        let stateBefore = content(cluster.state)
        #expect(cluster.apply(.commitObject(retried, compactedSources: [], now: 9)) == .ok)
        #expect(content(cluster.state) == stateBefore)
        var changed = retried
        changed.size = 2
        #expect(cluster.apply(.commitObject(changed, compactedSources: [], now: 9)).errorCode == MetadataErrorCode.requestTimedOut)
    }

    @Test func compactionMayDropOffsetsBelowTheStart() throws {
        var (cluster, a, _) = try setUp()
        cluster.appendRecords("a", 0, count: 10)
        cluster.appendRecords("a", 0, count: 10)
        let sources = cluster.state.objects(covering: a.id, from: 0).map(\.objectId)
        cluster.apply(.trimStream(streamId: a.id, newStart: 5, now: 1))
        let out = cluster.prepare(.stream)
        #expect(cluster.apply(.commitObject(
            ObjectCommit(objectId: out, size: 1, ranges: [range(a, 4, 20)]), compactedSources: sources, now: 2)) == .ok)
        #expect(cluster.state.objects(covering: a.id, from: 0).map(\.objectId) == [out])
    }

    @Test func expireAndDeleteObjects() throws {
        var (cluster, _, _) = try setUp()
        let early = cluster.prepare(deadline: 10)
        let late = cluster.prepare(deadline: 20)
        #expect(cluster.apply(.expirePrepared(now: 9)) == .objectsExpired([]))
        #expect(cluster.apply(.expirePrepared(now: 10)) == .objectsExpired([early]))
        #expect(cluster.state.objects[early]?.state == .destroyed)
        #expect(cluster.state.objects[late]?.state == .prepared)
        #expect(cluster.state.objectsDueForDeletion(now: 15, gracePeriod: 5) == [early])
        #expect(cluster.state.objectsDueForDeletion(now: 14, gracePeriod: 5) == [])
        #expect(cluster.state.objectsDueForDeletion(now: Int64.min, gracePeriod: Int64.max) == [])
        #expect(cluster.apply(.objectsDeleted([early, late])).errorCode == MetadataErrorCode.invalidRequest)
        #expect(cluster.state.objects[early] != nil)
        #expect(cluster.apply(.objectsDeleted([early, 12345])) == .ok)
        #expect(cluster.state.objects[early] == nil)
        #expect(cluster.apply(.objectsDeleted([early])) == .ok)
        // A destroyed (expired) object can no longer be committed.
        cluster.apply(.expirePrepared(now: 30))
        #expect(cluster.apply(.commitObject(ObjectCommit(objectId: late, size: 1, ranges: []), compactedSources: [], now: 1)).errorCode
            == MetadataErrorCode.requestTimedOut)
    }
}
