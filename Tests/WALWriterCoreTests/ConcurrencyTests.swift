import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing
import WALWriterCore

@Suite struct ConcurrencyTests {
    /// One task per stream appending offsets 0..<perStream in order, each checking its LSNs grow.
    static func addAppenders(to group: inout ThrowingTaskGroup<Void, any Error>, wal: WALEngine, streams: Int, perStream: Int) {
        for s in 0..<streams {
            group.addTask {
                var previous: LSN? = nil
                for i in 0..<perStream {
                    let r = try await wal.append(stream: UInt64(s), epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: helperPayload(stream: UInt64(s), base: Int64(i)))
                    if let previous { #expect(r.lsn > previous) }
                    previous = r.lsn
                }
            }
        }
    }

    @Test func concurrentAppendersShareSyncs() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let wal = try await WALEngine.open(configuration: .init(directory: dir.path, segmentSize: 1 << 20), logger: quietLogger)
        let streams = 64, perStream = 20
        try await withThrowingTaskGroup(of: Void.self) { group in
            Self.addAppenders(to: &group, wal: wal, streams: streams, perStream: perStream)
            try await group.waitForAll()
        }
        let stats = await wal.stats()
        #expect(stats.appends == UInt64(streams * perStream))
        // Group commit: many appends per sync.
        #expect(stats.syncs * 4 < stats.appends, "syncs \(stats.syncs) for \(stats.appends) appends")
        #expect(stats.syncLatency.count == stats.syncs)
        #expect(stats.appendLatency.count == stats.appends)
        for s in 0..<streams {
            let all = try await wal.read(stream: UInt64(s), from: 0, maxBytes: 1 << 30)
            #expect(all == (0..<perStream).map { helperPayload(stream: UInt64(s), base: Int64($0)) })
        }
        await wal.close()
    }

    /// With no idle threshold every write that finds the I/O thread free runs on the caller's thread;
    /// concurrent appenders, trims in between and a restart must see the same log as with the I/O thread.
    @Test func inlineWritesKeepOrderAndDurability() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let config = WALEngine.Configuration(directory: dir.path, segmentSize: 8192, inlineWriteAfterIdle: .zero)
        let wal = try await WALEngine.open(configuration: config, logger: quietLogger)
        let streams = 8, perStream = 60
        try await withThrowingTaskGroup(of: Void.self) { group in
            Self.addAppenders(to: &group, wal: wal, streams: streams, perStream: perStream)
            // Trims interleave with the appends, so some writes find the I/O thread busy and go there.
            group.addTask {
                for _ in 0..<20 {
                    let snapshot = await wal.pendingUpload()
                    guard let last = snapshot.streams.map(\.lastLSN).min() else { await Task.yield(); continue }
                    let ends = Dictionary(uniqueKeysWithValues: snapshot.streams.map { ($0.stream, $0.endOffset) })
                    try await wal.trim(upTo: last, committedEnds: ends)
                }
            }
            try await group.waitForAll()
        }
        #expect(await wal.stats().appends == UInt64(streams * perStream))
        await wal.close()
        let reopened = try await WALEngine.open(configuration: config, logger: quietLogger)
        for s in 0..<streams {
            #expect(await reopened.streamState(UInt64(s))?.durableEnd == Int64(perStream))
            let tail = try await reopened.read(stream: UInt64(s), from: Int64(perStream - 1), maxBytes: 0)
            #expect(tail == [helperPayload(stream: UInt64(s), base: Int64(perStream - 1))])
        }
        await reopened.close()
    }

    @Test func backpressureBoundsBufferedBytes() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let record = WALFormat.encodedSize(batchBytes: 100)
        let limit = record * 10
        let wal = try await WALEngine.open(configuration: .init(directory: dir.path, segmentSize: 1 << 20, maxBufferedBytes: limit), logger: quietLogger)
        let payload = ByteBuffer(repeating: 9, count: 100)
        for i in 0..<10 {
            _ = try await wal.append(stream: 1, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: payload)
        }
        #expect(await wal.stats().bufferedBytes == limit)
        let blocked = Task { try await wal.append(stream: 1, epoch: 1, baseOffset: 10, lastOffset: 10, batches: payload) }
        // Wait (bounded) until the engine reports the append as waiting for space.
        let deadline = ContinuousClock.now + .seconds(10)
        while await wal.stats().blockedAppends == 0, ContinuousClock.now < deadline { await Task.yield() }
        let stats = await wal.stats()
        #expect(stats.blockedAppends == 1)
        #expect(stats.bufferedBytes <= limit)
        #expect(stats.appends == 10)
        // The uploader commits and trims the first three records: the waiting append goes through.
        let snapshot = await wal.pendingUpload()
        #expect(snapshot.streams.first?.batchCount == 10)
        try await wal.trim(upTo: snapshot.streams[0].firstLSN + 3, committedEnds: [1: 3])
        let result = try await blocked.value
        #expect(result.baseOffset == 10)
        let after = await wal.stats()
        #expect(after.bufferedBytes == limit - 2 * record)
        #expect(after.blockedAppends == 0)
        await wal.close()
    }

    @Test(.timeLimit(.minutes(1))) func appendsEnqueuedOnTheEngineLoopCallBackThereOnceEach() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let wal = try await WALEngine.open(configuration: .init(directory: dir.path, segmentSize: 1 << 20), logger: quietLogger, eventLoop: loop)
        #expect(wal.eventLoop === loop)
        let outcomes = Mutex<[Int: [Result<DurableAppend, WALError>]]>([:])
        let offLoop = Mutex(0)
        let allDone = loop.makePromise(of: Void.self)
        let remaining = Mutex(40)
        // Enqueued without a task from the loop itself (the handler's on-loop path), a wrong offset among them,
        // each with its callback registered right away.
        let tickets = try await loop.submit {
            (0..<40).map { index in
                let ticket = wal.assumeIsolated { engine in
                    let base = index == 20 ? Int64(900) : Int64(index < 20 ? index : index - 1)
                    return engine.enqueueAppend(stream: 3, epoch: 1, baseOffset: base, lastOffset: base, batches: bytes("r\(index)"))
                }
                ticket.whenComplete { result in
                    if !loop.inEventLoop { offLoop.withLock { $0 += 1 } }
                    outcomes.withLock { $0[index, default: []].append(result) }
                    if remaining.withLock({ $0 -= 1; return $0 }) == 0 { allDone.succeed() }
                }
                return ticket
            }
        }.get()
        try await allDone.futureResult.get()
        let results = outcomes.withLock { $0 }
        #expect(results.count == 40 && results.values.allSatisfy { $0.count == 1 }, "each callback runs exactly once")
        #expect(offLoop.withLock { $0 } == 0, "callbacks of pending appends run on the engine's loop")
        #expect(throws: WALError.offsetMismatch(stream: 3, expectedBaseOffset: 20)) { try results[20]?.first?.get() }
        let lsns = try (0..<40).filter { $0 != 20 }.map { try #require(results[$0]?.first).get().lsn }
        #expect(lsns == lsns.sorted() && Set(lsns).count == 39)
        // A callback registered after completion runs at once, on the caller's thread.
        let late = Mutex<LSN?>(nil)
        tickets[0].whenComplete { result in late.withLock { $0 = try? result.get().lsn } }
        #expect(late.withLock { $0 } == lsns.first)
        #expect(try await tickets[39].result().lsn == lsns.last, "awaiting and callbacks see the same outcome")
        await wal.close()
        try await group.shutdownGracefully()
    }

    @Test func pipelinedAppendsOfOneStreamStayInOrder() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let wal = try await WALEngine.open(configuration: .init(directory: dir.path, segmentSize: 1 << 20), logger: quietLogger)
        var tickets: [AppendTicket] = []
        for i in 0..<200 {
            tickets.append(await wal.enqueueAppend(stream: 5, epoch: 1, baseOffset: Int64(i), lastOffset: Int64(i), batches: helperPayload(stream: 5, base: Int64(i))))
        }
        // A wrong offset in the middle of the pipeline is refused without disturbing the rest.
        let gap = await wal.enqueueAppend(stream: 5, epoch: 1, baseOffset: 500, lastOffset: 500, batches: bytes("gap"))
        let tail = await wal.enqueueAppend(stream: 5, epoch: 1, baseOffset: 200, lastOffset: 200, batches: bytes("tail"))
        var lsns: [LSN] = []
        for ticket in tickets { lsns.append(try await ticket.result().lsn) }
        #expect(lsns == lsns.sorted() && Set(lsns).count == lsns.count)
        await #expect(throws: WALError.offsetMismatch(stream: 5, expectedBaseOffset: 200)) { try await gap.result() }
        #expect(try await tail.result().lsn > lsns.last ?? 0)
        #expect(try await wal.read(stream: 5, from: 0, maxBytes: 1 << 30).count == 201)
        await wal.close()
    }
}
