import ClusterMetadata
import KafkaProtocol
import NIOCore
import Testing
import TestKit

@Suite struct RememberedWriteTests {
    private func createTopic(_ name: String, id: UInt64) -> MetadataCommand {
        .createTopics([TopicSpec(name: name, topicId: uuid(id), partitionCount: 2)])
    }

    @Test func aRetriedWriteIsAppliedOnceAndAnsweredAsTheFirstTime() {
        var state = MetadataState()
        let write = MetadataLogEntry(createTopic("t", id: 1), writeId: uuid(100))
        let first = state.apply(write, index: 1, term: 1)
        #expect(first == AppliedWrite(result: .items([ItemResult(name: "t")]), index: 1))
        let afterFirst = content(state)

        let retry = state.apply(write, index: 2, term: 2)
        #expect(retry == first)
        #expect(state.topics.count == 1 && state.streams.count == 2)
        #expect(state.lastAppliedIndex == 2 && state.lastAppliedTerm == 2)
        #expect(content(state) == afterFirst)

        // A different write of the same topic is a real conflict, as without ids.
        let other = state.apply(MetadataLogEntry(createTopic("t", id: 2), writeId: uuid(101)), index: 3, term: 2)
        #expect(other.index == 3)
        #expect(items(other.result) == [MetadataErrorCode.topicAlreadyExists])
        // And so is one without an id, which is never remembered.
        let anonymous = state.apply(MetadataLogEntry(createTopic("t", id: 3)), index: 4, term: 2)
        #expect(items(anonymous.result) == [MetadataErrorCode.topicAlreadyExists])
        #expect(state.rememberedWrites.count == 2)
        #expect(state.topics["t"]?.topicId == uuid(1))
    }

    @Test func aRejectedWriteStaysRejectedOnRetry() {
        var state = MetadataState()
        let write = MetadataLogEntry(.allocateProducerIds(brokerId: 1, incarnation: 1), writeId: uuid(7))
        let first = state.apply(write, index: 1)
        #expect(first.result.errorCode == MetadataErrorCode.brokerIdNotRegistered)
        _ = state.apply(.registerNode(NodeRegistration(id: 1, kind: .broker, zone: "a", listener: "l", admin: "a")), index: 2)
        // The broker exists now, but the retry reports what its write did, not a second allocation.
        #expect(state.apply(write, index: 3) == first)
        #expect(state.nextProducerId == 0)
    }

    @Test func anOutdatedIndexIsRefusedBeforeTheTableIsConsulted() {
        var state = MetadataState()
        let write = MetadataLogEntry(createTopic("t", id: 1), writeId: uuid(100))
        _ = state.apply(write, index: 5)
        let stale = state.apply(write, index: 5)
        #expect(stale.result.errorCode == MetadataErrorCode.invalidRequest)
        #expect(state.lastAppliedIndex == 5)
    }

    @Test func theTableKeepsExactlyTheBoundAndForgetsTheOldestFirst() {
        var state = MetadataState()
        let limit = MetadataState.rememberedWriteLimit
        for step in 1...(limit + 1) {
            _ = state.apply(MetadataLogEntry(.objectsDeleted([]), writeId: uuid(UInt64(step))), index: UInt64(step))
        }
        #expect(state.rememberedWrites.count == limit)
        #expect(state.rememberedWrites[uuid(1)] == nil)
        #expect(state.rememberedWrites[uuid(2)]?.index == 2)
        #expect(state.rememberedWrites[uuid(UInt64(limit + 1))]?.index == UInt64(limit + 1))
        #expect(state.rememberedWrites.inApplyOrder.map(\.write.index) == Array(2...UInt64(limit + 1)))

        // A forgotten id is applied again: the bound is what a retry window must fit in.
        let next = UInt64(limit + 2)
        let again = state.apply(MetadataLogEntry(.prepareObject(kind: .stream, deadline: 9), writeId: uuid(1)), index: next)
        #expect(again == AppliedWrite(result: .objectPrepared(1), index: next))
        #expect(state.rememberedWrites.count == limit)
        #expect(state.rememberedWrites[uuid(2)] == nil)
    }

    @Test func snapshotsKeepTheTableAndItsEvictionOrder() throws {
        var state = MetadataState()
        _ = state.apply(.registerNode(NodeRegistration(id: 1, kind: .broker, zone: "a", listener: "l", admin: "a")), index: 1)
        _ = state.apply(MetadataLogEntry(createTopic("t", id: 1), writeId: uuid(50)), index: 2)
        _ = state.apply(MetadataLogEntry(createTopic("t", id: 2), writeId: uuid(51)), index: 3)
        _ = state.apply(MetadataLogEntry(.prepareObject(kind: .streamSet, deadline: 100), writeId: uuid(52)), index: 4)
        let snapshot = state.encodeSnapshot()
        var loaded = try MetadataState(snapshot: snapshot)
        #expect(loaded == state)
        #expect(loaded.encodeSnapshot() == snapshot)
        #expect(loaded.rememberedWrites.inApplyOrder.map(\.id) == [uuid(50), uuid(51), uuid(52)])
        #expect(items(loaded.rememberedWrites[uuid(51)]?.result ?? .ok) == [MetadataErrorCode.topicAlreadyExists])

        // A restored replica answers a retry exactly as the one that applied the write.
        let retry = MetadataLogEntry(.prepareObject(kind: .streamSet, deadline: 100), writeId: uuid(52))
        #expect(loaded.apply(retry, index: 5) == AppliedWrite(result: .objectPrepared(1), index: 4))
        #expect(state.apply(retry, index: 5) == AppliedWrite(result: .objectPrepared(1), index: 4))
        #expect(loaded == state)

        // Every strict prefix of the table section is rejected, not truncated silently.
        let withoutTable = snapshot.readableBytes - 1
        #expect(throws: ProtocolError.self) { try MetadataState(snapshot: snapshot.getSlice(at: 0, length: withoutTable) ?? ByteBuffer()) }
    }

    @Test func snapshotsWithInconsistentTablesAreRejected() throws {
        var state = MetadataState()
        _ = state.apply(MetadataLogEntry(.objectsDeleted([]), writeId: uuid(1)), index: 1)
        let base = MetadataState().encodeSnapshot()

        func snapshot(lastApplied: UInt64, _ writes: [(KafkaUUID, UInt64)]) -> ByteBuffer {
            var buffer = base
            buffer.setInteger(lastApplied, at: buffer.readerIndex + 1)
            buffer.writeUnsignedVarint(UInt32(writes.count))
            for (id, index) in writes {
                buffer.writeKafkaUUID(id)
                buffer.writeInteger(index)
                let result = MetadataResult.ok.encode()
                buffer.writeUnsignedVarint(UInt32(result.readableBytes))
                buffer.writeImmutableBuffer(result)
            }
            return buffer
        }
        #expect(try MetadataState(snapshot: snapshot(lastApplied: 1, [(uuid(1), 1)])) == state)
        // Past the applied index, out of order, duplicated, all-zero id, or an empty section.
        #expect(throws: ProtocolError.self) { try MetadataState(snapshot: snapshot(lastApplied: 1, [(uuid(1), 2)])) }
        #expect(throws: ProtocolError.self) { try MetadataState(snapshot: snapshot(lastApplied: 9, [(uuid(1), 3), (uuid(2), 2)])) }
        #expect(throws: ProtocolError.self) { try MetadataState(snapshot: snapshot(lastApplied: 9, [(uuid(1), 2), (uuid(1), 3)])) }
        #expect(throws: ProtocolError.self) { try MetadataState(snapshot: snapshot(lastApplied: 9, [(.zero, 2)])) }
        #expect(throws: ProtocolError.self) { try MetadataState(snapshot: snapshot(lastApplied: 9, [])) }
    }

    /// A snapshot as written before writes were remembered: it ends after the reassignments.
    @Test func aSnapshotWithoutTheTableLoadsAndEncodesAsBefore() throws {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1))
        buffer.writeInteger(UInt64(12))  // last applied index
        buffer.writeInteger(UInt64(3))  // last applied term
        buffer.writeVarlong(2)  // next incarnation
        buffer.writeVarlong(1)  // next stream id
        buffer.writeVarlong(1)  // next object id
        buffer.writeVarlong(0)  // next producer id
        buffer.writeUnsignedVarint(1)  // one node
        buffer.writeVarint(4)
        buffer.writeInteger(NodeKind.broker.rawValue)
        for text in ["z", "127.0.0.1:9004", "127.0.0.1:8004"] { buffer.writeKafkaString(text, compact: true) }
        buffer.writeVarlong(1)
        buffer.writeInteger(NodeState.active.rawValue)
        for _ in 0..<4 { buffer.writeUnsignedVarint(0) }  // topics, streams, objects, reassignments

        var state = try MetadataState(snapshot: buffer)
        #expect(state.lastAppliedIndex == 12 && state.nodes[4]?.incarnation == 1)
        #expect(state.rememberedWrites.isEmpty)
        #expect(state.encodeSnapshot() == buffer)
        _ = state.apply(MetadataLogEntry(.objectsDeleted([]), writeId: uuid(9)), index: 13)
        #expect(try MetadataState(snapshot: state.encodeSnapshot()).rememberedWrites[uuid(9)]?.index == 13)
    }

    @Test func logEntriesWithoutAnIdAreBareCommands() throws {
        let command = createTopic("t", id: 1)
        // Entries written before ids existed decode, and an entry without an id is byte for byte the bare command.
        #expect(try MetadataLogEntry(decoding: command.encode()) == MetadataLogEntry(command))
        #expect(MetadataLogEntry(command).encode() == command.encode())
        #expect(MetadataLogEntry(command, writeId: .zero).writeId == nil)

        let identified = MetadataLogEntry(command, writeId: uuid(3))
        let encoded = identified.encode()
        #expect(encoded.readableBytes == command.encode().readableBytes + 17)
        #expect(try MetadataLogEntry(decoding: encoded) == identified)
        // The bare-command decoder refuses an identified entry rather than misreading it.
        #expect(throws: ProtocolError.self) { try MetadataCommand(decoding: encoded) }

        for length in 0..<encoded.readableBytes {
            #expect(throws: ProtocolError.self) { try MetadataLogEntry(decoding: encoded.getSlice(at: 0, length: length) ?? ByteBuffer()) }
        }
        var zeroId = ByteBuffer()
        zeroId.writeInteger(UInt8(2))
        zeroId.writeKafkaUUID(.zero)
        command.encode(into: &zeroId)
        #expect(throws: ProtocolError.self) { try MetadataLogEntry(decoding: zeroId) }
    }

    /// Generated writes, a fifth of them retried a few entries later: every retry answers as its first attempt,
    /// the state is the one the writes alone produce, and replicas restored from snapshots on the way agree.
    @Test(arguments: [4, 5] as [UInt64])
    func retriesInAGeneratedLogChangeNothingAndReplicasAgree(seed: UInt64) throws {
        var generator = CommandGenerator(seed: seed)
        var random = SeededRandom(seed: seed &+ 1000)
        var state = MetadataState()
        var restored = MetadataState()
        var once = MetadataState()
        var recent: [(entry: MetadataLogEntry, first: AppliedWrite)] = []
        var index: UInt64 = 0
        var retries = 0
        for step in 0..<2_000 {
            index += 1
            if !recent.isEmpty, random.next() % 5 == 0 {
                let (entry, first) = recent[Int(random.next() % UInt64(recent.count))]
                #expect(state.apply(entry, index: index, term: 1) == first)
                #expect(restored.apply(entry, index: index, term: 1) == first)
                retries += 1
            } else {
                let entry = MetadataLogEntry(generator.next(for: once), writeId: WriteID.random(using: &random))
                let first = state.apply(entry, index: index, term: 1)
                #expect(restored.apply(entry, index: index, term: 1) == first)
                #expect(once.apply(entry.command, index: index, term: 1) == first.result)
                recent.append((entry, first))
                if recent.count > 20 { recent.removeFirst() }
            }
            if step % 500 == 250 { restored = try MetadataState(snapshot: restored.encodeSnapshot()) }
        }
        #expect(retries > 300)
        #expect(restored == state)
        #expect(restored.encodeSnapshot() == state.encodeSnapshot())
        // Apart from the table and the applied index, the retries left no trace.
        #expect(state.topics == once.topics && state.streams == once.streams && state.objects == once.objects)
        #expect(state.nodes == once.nodes && state.reassignments == once.reassignments)
        #expect(state.nextProducerId == once.nextProducerId)
    }
}
