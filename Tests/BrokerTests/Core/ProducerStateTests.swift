@testable import BrokerCore
import KafkaProtocol
import KafkaRecords
import NIOCore
import Testing

@Suite struct ProducerStateTests {
    typealias Meta = ProducerStateTable.BatchMetadata

    func meta(_ first: Int32, _ last: Int32, at offset: Int64, append: UInt64 = 1) -> Meta {
        Meta(firstSequence: first, lastSequence: last, baseOffset: offset, lastOffset: offset + Int64(last - first), append: append)
    }

    @Test func unknownProducersAreAcceptedAtAnySequence() {
        let table = ProducerStateTable()
        #expect(table.check(id: 7, epoch: 0, firstSequence: 0, lastSequence: 4) == .append)
        #expect(table.check(id: 7, epoch: 0, firstSequence: 42, lastSequence: 50) == .append)
        #expect(table.check(id: -1, epoch: -1, firstSequence: -1, lastSequence: -1) == .append)
    }

    @Test func sequencesMustContinue() {
        var table = ProducerStateTable()
        table.record(id: 7, epoch: 0, batch: meta(0, 4, at: 100), now: 0)
        #expect(table.check(id: 7, epoch: 0, firstSequence: 5, lastSequence: 9) == .append)
        guard case .reject(let code, _) = table.check(id: 7, epoch: 0, firstSequence: 6, lastSequence: 9) else {
            Issue.record("a gap was accepted")
            return
        }
        // Retriable, so the client resends the missing batch first (see ProducerStateTable.check).
        #expect(code == .notLeaderOrFollower)
    }

    @Test func retriesOfAnyOfTheLastFiveBatchesAreDuplicates() {
        var table = ProducerStateTable()
        for batch in 0..<7 {
            table.record(id: 7, epoch: 0, batch: meta(Int32(batch * 10), Int32(batch * 10 + 9), at: Int64(batch * 10), append: UInt64(batch)), now: 0)
        }
        for batch in 2..<7 {
            #expect(table.check(id: 7, epoch: 0, firstSequence: Int32(batch * 10), lastSequence: Int32(batch * 10 + 9))
                == .duplicate(meta(Int32(batch * 10), Int32(batch * 10 + 9), at: Int64(batch * 10), append: UInt64(batch))))
        }
        // Older than the last five: no longer known, so it is refused (not appended twice).
        guard case .reject = table.check(id: 7, epoch: 0, firstSequence: 10, lastSequence: 19) else {
            Issue.record("a forgotten batch was not refused")
            return
        }
    }

    @Test func epochsFenceOlderProducersAndRestartSequences() {
        var table = ProducerStateTable()
        table.record(id: 7, epoch: 3, batch: meta(0, 0, at: 0), now: 0)
        guard case .reject(let fenced, _) = table.check(id: 7, epoch: 2, firstSequence: 1, lastSequence: 1) else {
            Issue.record("an older epoch was accepted")
            return
        }
        #expect(fenced == .invalidProducerEpoch)
        #expect(table.check(id: 7, epoch: 4, firstSequence: 0, lastSequence: 3) == .append)
        guard case .reject(let restart, _) = table.check(id: 7, epoch: 4, firstSequence: 1, lastSequence: 3) else {
            Issue.record("a new epoch not starting at 0 was accepted")
            return
        }
        #expect(restart == .outOfOrderSequenceNumber)
        table.record(id: 7, epoch: 4, batch: meta(0, 3, at: 10), now: 0)
        #expect(table.check(id: 7, epoch: 4, firstSequence: 4, lastSequence: 4) == .append)
    }

    @Test func sequencesWrapAfterInt32Max() {
        var table = ProducerStateTable()
        table.record(id: 1, epoch: 0, batch: meta(Int32.max - 1, Int32.max, at: 0), now: 0)
        #expect(table.check(id: 1, epoch: 0, firstSequence: 0, lastSequence: 4) == .append)
        let info = ReplicaManager.BatchInfo(start: 0, count: 3, producerId: 1, producerEpoch: 0, baseSequence: Int32.max - 1)
        #expect(info.lastSequence == 0)
    }

    @Test func producersSilentPastTheExpiryAreForgotten() {
        var table = ProducerStateTable()
        table.record(id: 7, epoch: 0, batch: meta(0, 4, at: 0), now: 1_000)
        table.record(id: 8, epoch: 0, batch: meta(0, 4, at: 5), now: 1_000)
        table.record(id: 8, epoch: 0, batch: meta(5, 9, at: 10), now: 5_000)
        #expect(table.expire(before: 2_000) == 1)
        #expect(table.count == 1)
        // 7 is unknown again: any sequence is accepted, as for a new producer.
        #expect(table.check(id: 7, epoch: 0, firstSequence: 50, lastSequence: 54) == .append)
        // 8 was seen at 5,000 (its latest batch counts), so it is still checked.
        #expect(table.check(id: 8, epoch: 0, firstSequence: 5, lastSequence: 9) == .duplicate(meta(5, 9, at: 10)))
        guard case .reject = table.check(id: 8, epoch: 0, firstSequence: 50, lastSequence: 54) else {
            Issue.record("a gap was accepted from a producer that has not expired")
            return
        }
        #expect(table.expire(before: 5_000) == 0)
        #expect(table.expire(before: 5_001) == 1)
        #expect(table.count == 0)
    }

    @Test func aNewEpochStartsAFreshEntry() {
        var table = ProducerStateTable()
        table.record(id: 7, epoch: 0, batch: meta(0, 4, at: 0), now: 1)
        table.record(id: 7, epoch: 1, batch: meta(0, 2, at: 5), now: 2)
        // The old epoch's batches are gone and older epochs are ignored.
        table.record(id: 7, epoch: 0, batch: meta(5, 9, at: 8), now: 3)
        #expect(table.check(id: 7, epoch: 1, firstSequence: 0, lastSequence: 2) == .duplicate(meta(0, 2, at: 5)))
        #expect(table.check(id: 7, epoch: 1, firstSequence: 3, lastSequence: 3) == .append)
        #expect(table.expire(before: 3) == 1)
    }

    @Test func replayRebuildsWhatAppendsRecorded() throws {
        var built = ProducerStateTable()
        var replayed = ProducerStateTable()
        var offset: Int64 = 0
        for batch in 0..<8 {
            var builder = RecordBatchBuilder(codec: .none, expectedPayloadBytes: 256)
            builder.producerId = 9
            builder.producerEpoch = 1
            builder.baseSequence = Int32(batch * 3)
            builder.baseOffset = offset
            for record in 0..<3 { try builder.append(timestamp: 1_000 + Int64(record), key: nil, value: ByteBuffer(string: "r\(record)")) }
            let built1 = try builder.build()
            built.record(id: 9, epoch: 1, batch: meta(Int32(batch * 3), Int32(batch * 3 + 2), at: offset, append: 0), now: 0)
            replayed.replay(built1, now: 0)
            offset += 3
        }
        #expect(built == replayed)
        #expect(replayed.check(id: 9, epoch: 1, firstSequence: 24, lastSequence: 26) == .append)
    }
}

extension ProducerStateTable: Equatable {
    public static func == (lhs: ProducerStateTable, rhs: ProducerStateTable) -> Bool { lhs.producers == rhs.producers }
}
