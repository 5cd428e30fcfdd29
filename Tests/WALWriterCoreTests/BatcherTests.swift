import NIOCore
import Testing
import WALWriterCore

@Suite struct BatcherTests {
    static let config = WALBatcher.Configuration(maxBufferedBytes: 1000, maxWriteBytes: 300, maxRecordBytes: 500)

    func append(_ stream: UInt64, _ base: Int64, _ last: Int64, epoch: Int32 = 1, size: Int = 100) -> WALBatcher.Request {
        .append(stream: stream, epoch: epoch, baseOffset: base, lastOffset: last, size: size)
    }

    @Test func groupsWhileAWriteIsInFlightAndAnswersInOrder() {
        var core = WALBatcher(configuration: Self.config, nextLSN: 10)
        let first = core.step(.submit(1, append(1, 0, 0)))
        #expect(first == [.write(batch: 1, entries: [.init(id: 1, lsn: 10, request: append(1, 0, 0))])])
        #expect(core.step(.submit(2, append(1, 1, 4))) == [])
        #expect(core.step(.submit(3, append(2, 0, 0))) == [])
        #expect(core.step(.submit(4, append(1, 5, 5))) == [])
        let done = core.step(.writeCompleted(batch: 1))
        // Three waiting requests of 100 bytes fit in one 300-byte write.
        #expect(done == [
            .answer(1, .appended(lsn: 10)),
            .write(batch: 2, entries: [
                .init(id: 2, lsn: 11, request: append(1, 1, 4)),
                .init(id: 3, lsn: 12, request: append(2, 0, 0)),
                .init(id: 4, lsn: 13, request: append(1, 5, 5)),
            ]),
        ])
        #expect(core.step(.writeCompleted(batch: 2)) == [
            .answer(2, .appended(lsn: 11)), .answer(3, .appended(lsn: 12)), .answer(4, .appended(lsn: 13)),
        ])
        #expect(core.streams[1]?.durableEnd == 6)
        #expect(core.unsyncedCount == 0)
    }

    @Test func checksEpochAndContinuityAgainstAdmittedAppends() {
        var core = WALBatcher(configuration: Self.config, nextLSN: 0, streams: [1: .init(epoch: 3, end: 50)])
        #expect(core.step(.submit(1, append(1, 50, 59, epoch: 2))) == [.answer(1, .failed(.fenced(stream: 1, currentEpoch: 3)))])
        #expect(core.step(.submit(2, append(1, 49, 59, epoch: 3))) == [.answer(2, .failed(.offsetMismatch(stream: 1, expectedBaseOffset: 50)))])
        #expect(core.step(.submit(3, append(1, 50, 59, epoch: 4))).count == 1)
        // Pipelined: the next append continues after the admitted (not yet durable) one.
        #expect(core.step(.submit(4, append(1, 60, 60, epoch: 4))) == [])
        // Refusals of stream 1 wait behind its appends still on their way to disk; stream 2's do not.
        #expect(core.step(.submit(5, append(1, 60, 60, epoch: 4))) == [])
        #expect(core.step(.submit(6, append(1, 61, 60, epoch: 4))) == [])
        #expect(core.step(.submit(8, append(1, 61, Int64.max, epoch: 4))) == [])
        #expect(core.step(.submit(9, append(2, -1, 0))) == [.answer(9, .failed(.invalidOffsets(stream: 2, baseOffset: -1, lastOffset: 0)))])
        #expect(core.step(.submit(7, append(1, 61, 61, size: 501))) == [])
        #expect(core.streams[1]?.epoch == 4)
        #expect(core.streams[1]?.durableEpoch == 3)
        let first = core.step(.writeCompleted(batch: 1))
        #expect(first == [.answer(3, .appended(lsn: 0)), .write(batch: 2, entries: [.init(id: 4, lsn: 1, request: append(1, 60, 60, epoch: 4))])])
        #expect(core.step(.writeCompleted(batch: 2)) == [
            .answer(4, .appended(lsn: 1)),
            .answer(5, .failed(.offsetMismatch(stream: 1, expectedBaseOffset: 61))),
            .answer(6, .failed(.invalidOffsets(stream: 1, baseOffset: 61, lastOffset: 60))),
            .answer(8, .failed(.invalidOffsets(stream: 1, baseOffset: 61, lastOffset: Int64.max))),
            .answer(7, .failed(.tooLarge(bytes: 501, limit: 500))),
        ])
        #expect(core.streams[1]?.durableEpoch == 4)
        // Nothing in flight for the stream: a refusal is answered at once.
        #expect(core.step(.submit(10, append(1, 50, 50, epoch: 4))) == [.answer(10, .failed(.offsetMismatch(stream: 1, expectedBaseOffset: 61)))])
    }

    @Test func backpressureBlocksUntilTrimAndFencesBypassIt() {
        var core = WALBatcher(configuration: Self.config, nextLSN: 0)
        var lsns: [LSN] = []
        for i in 0..<10 {
            for action in core.step(.submit(UInt64(i), append(1, Int64(i), Int64(i)))) {
                if case .write(let batch, let entries) = action {
                    lsns += entries.map(\.lsn)
                    for answer in core.step(.writeCompleted(batch: batch)) {
                        if case .write(let b, let e) = answer { lsns += e.map(\.lsn); _ = core.step(.writeCompleted(batch: b)) }
                    }
                }
            }
        }
        #expect(core.bufferedBytes == 1000)
        #expect(core.step(.submit(100, append(1, 10, 10))) == [])
        #expect(core.step(.submit(101, append(1, 11, 11))) == [])
        #expect(core.blockedCount == 2)
        // A fence is admitted at once and written.
        let fence = core.step(.submit(102, .fence(stream: 1, epoch: 2, size: 29)))
        #expect(fence == [.write(batch: 11, entries: [.init(id: 102, lsn: 10, request: .fence(stream: 1, epoch: 2, size: 29))])])
        // Once the fence is durable the blocked appends are refused without waiting for space: old epoch.
        #expect(core.step(.writeCompleted(batch: 11)) == [
            .answer(102, .fenced(durableEnd: 10)),
            .answer(100, .failed(.fenced(stream: 1, currentEpoch: 2))),
            .answer(101, .failed(.fenced(stream: 1, currentEpoch: 2))),
        ])
        #expect(core.blockedCount == 0)
        #expect(core.step(.trimmed(upTo: 2)) == [])
        #expect(core.bufferedBytes == 829)
        #expect(core.step(.submit(103, append(1, 10, 10, epoch: 2))).count == 1)
    }

    @Test func writeFailureFailsEverythingAfterIt() {
        var core = WALBatcher(configuration: Self.config, nextLSN: 0)
        _ = core.step(.submit(1, append(1, 0, 0)))
        _ = core.step(.submit(2, append(1, 1, 1)))
        let failed = core.step(.writeFailed(batch: 1, .volume(operation: "fdatasync", errno: 5)))
        #expect(failed == [.answer(1, .failed(.volume(operation: "fdatasync", errno: 5))), .answer(2, .failed(.volume(operation: "fdatasync", errno: 5)))])
        #expect(core.step(.submit(3, append(1, 2, 2))) == [.answer(3, .failed(.volume(operation: "fdatasync", errno: 5)))])
    }

    @Test func unsyncedLimitHoldsAppendsUntilAWriteCompletes() {
        var core = WALBatcher(configuration: .init(maxBufferedBytes: 10_000, maxWriteBytes: 10_000, maxRecordBytes: 500, maxUnsyncedBytes: 300), nextLSN: 0)
        #expect(core.step(.submit(1, append(1, 0, 0))).count == 1)
        #expect(core.step(.submit(2, append(1, 1, 1))) == [])
        #expect(core.step(.submit(3, append(1, 2, 2))) == [])
        #expect(core.step(.submit(4, append(1, 3, 3))) == [])
        #expect(core.unsyncedBytes == 300)
        #expect(core.blockedCount == 1)
        // The first write frees 100 bytes: the blocked append joins the next write with the others.
        #expect(core.step(.writeCompleted(batch: 1)) == [
            .answer(1, .appended(lsn: 0)),
            .write(batch: 2, entries: [
                .init(id: 2, lsn: 1, request: append(1, 1, 1)),
                .init(id: 3, lsn: 2, request: append(1, 2, 2)),
                .init(id: 4, lsn: 3, request: append(1, 3, 3)),
            ]),
        ])
        #expect(core.blockedCount == 0)
    }
}
