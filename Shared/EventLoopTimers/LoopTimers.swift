import NIOCore
import NIOPosix

/// Sleeps and timeouts kept on the event loop the caller runs on.
///
/// `Task.sleep` arms a timer on Swift's default timer thread (Dispatch's). When it fires, that
/// thread wakes a worker, which hands the task back to an event loop through the loop's wake-up
/// descriptor, and the next sleep wakes the timer thread again to arm it: three or four thread
/// wake-ups per sleep, each tens of microseconds on an idle virtual machine and each a chance to
/// land on the other core just as a request arrives. In the services, whose tasks run on the NIO
/// event loops (`FloeRuntime.runTasksOnEventLoops`), these timers are the loop's own: a heartbeat
/// period or a fetch's long-poll timeout costs one timer update on the thread that is already
/// running, and a timeout that is cancelled before it fires costs nothing else.
public enum LoopTimers {
    /// The current event loop when called on one of the shared group's loops, otherwise any of them.
    static var loop: any EventLoop { MultiThreadedEventLoopGroup.singleton.any() }

    /// Like `Task.sleep(for:)`: returns after `duration`, or throws `CancellationError` as soon as
    /// the task is cancelled. A duration of zero or less returns at the loop's next turn.
    public static func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        let scheduled = loop.scheduleTask(in: max(.zero, .clamped(duration))) {}
        try await withTaskCancellationHandler {
            do {
                try await scheduled.futureResult.get()
            } catch EventLoopError.cancelled {
                throw CancellationError()
            }
        } onCancel: {
            scheduled.cancel()
        }
    }

    /// Like `Task.sleep(until:clock:)` on the continuous clock.
    public static func sleep(until deadline: ContinuousClock.Instant) async throws {
        try await sleep(for: deadline - ContinuousClock.now)
    }

    /// Runs `body` on an event loop after `delay`, unless the returned handle is cancelled first.
    /// For timeouts that usually do not fire: no task exists until one does.
    @discardableResult
    public static func after(_ delay: Duration, _ body: @escaping @Sendable () -> Void) -> Scheduled<Void> {
        loop.scheduleTask(in: max(.zero, .clamped(delay)), body)
    }
}

extension TimeAmount {
    /// `duration` in whole nanoseconds, clamped to what a `TimeAmount` holds.
    public static func clamped(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .nanoseconds(seconds < 0 ? .min : .max) }
        let (total, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return .nanoseconds(seconds < 0 ? .min : .max) }
        return .nanoseconds(total)
    }
}
