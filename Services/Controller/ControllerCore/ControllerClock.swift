import EventLoopTimers
import KafkaTransport
import NIOCore

/// A pending `ControllerClock.schedule` call; cancelling one that already ran does nothing.
public protocol ControllerTimer: Sendable {
    /// Stops the callback from running if it has not run yet.
    func cancel()
}

extension Scheduled: ControllerTimer {}

/// The controller's one source of time. The state machines take `now` as a `Duration` since the clock's
/// origin; production reads the continuous clock, tests and simulations drive a clock of their own.
public protocol ControllerClock: Sendable {
    /// Time since this clock's origin; never decreases.
    var now: Duration { get }
    /// Returns after `duration`, or throws `CancellationError` as soon as the task is cancelled.
    func sleep(for duration: Duration) async throws
    /// Runs `body` after `delay` unless the returned timer is cancelled first.
    func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void) -> any ControllerTimer
}

/// The production clock: `ContinuousClock` from the moment it was made, with event-loop timers.
public struct ContinuousControllerClock: ControllerClock {
    private let origin: ContinuousClock.Instant

    /// A clock whose origin is now.
    public init() {
        origin = ContinuousClock.now
    }

    public var now: Duration { origin.duration(to: ContinuousClock.now) }

    public func sleep(for duration: Duration) async throws {
        try await LoopTimers.sleep(for: duration)
    }

    public func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void) -> any ControllerTimer {
        LoopTimers.after(delay, body)
    }
}
