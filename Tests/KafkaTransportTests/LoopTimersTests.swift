import EventLoopTimers
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import KafkaTransport

/// Sleeps and timeouts on the event loops: they wait, they stop at cancellation, and a cancelled
/// timeout never runs.
@Suite struct LoopTimersTests {
    @Test func sleepReturnsOnceItsDurationHasPassed() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        try await LoopTimers.sleep(for: .milliseconds(30))
        #expect(clock.now - start >= .milliseconds(30))
        let deadline = clock.now + .milliseconds(20)
        try await LoopTimers.sleep(until: deadline)
        #expect(clock.now >= deadline)
        // A deadline already passed returns rather than waiting or failing.
        try await LoopTimers.sleep(until: start)
        try await LoopTimers.sleep(for: .seconds(-1))
    }

    @Test func cancellingTheTaskEndsAnHourLongSleepWithCancellationError() async {
        let started = AsyncStream<Void>.makeStream()
        let sleeper = Task {
            started.continuation.yield()
            try await LoopTimers.sleep(for: .seconds(3600))
        }
        var iterator = started.stream.makeAsyncIterator()
        _ = await iterator.next()
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }

    @Test func anAlreadyCancelledTaskDoesNotSleep() async {
        let sleeper = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await LoopTimers.sleep(for: .seconds(3600))
        }
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }

    @Test func aCancelledTimeoutNeverRunsAndTheOthersRunInDeadlineOrder() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let fired = NIOLockedValueBox<[String]>([])
        // Scheduled from one loop, so all three share its timer queue: by the time the last one runs,
        // the earlier deadlines have been served.
        let last: EventLoopFuture<Void> = try await loop.submit {
            let cancelled = LoopTimers.after(.milliseconds(5)) { fired.withLockedValue { $0.append("cancelled") } }
            LoopTimers.after(.milliseconds(10)) { fired.withLockedValue { $0.append("first") } }
            let last = loop.makePromise(of: Void.self)
            LoopTimers.after(.milliseconds(40)) {
                fired.withLockedValue { $0.append("last") }
                last.succeed()
            }
            cancelled.cancel()
            return last.futureResult
        }.get()
        try await last.get()
        #expect(fired.withLockedValue { $0 } == ["first", "last"])
    }
}
