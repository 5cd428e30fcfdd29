import Synchronization

/// A clock a test moves by hand: `now` stands still until ``advance(by:)``, which wakes the sleepers
/// and runs the callbacks whose deadlines it passes, in deadline order (ties in the order they were
/// made). Time-driven code under test then runs in simulated time, without real waiting.
public final class ManualClock: Sendable {
    /// A callback from ``after(_:_:)``; cancelling one that already ran does nothing.
    public struct Timer: Sendable {
        fileprivate let clock: ManualClock
        fileprivate let id: UInt64

        /// Stops the callback from running if it has not run yet.
        public func cancel() { clock.remove(id)?.fire(cancelled: true) }
    }

    private enum Waiter {
        case sleeper(CheckedContinuation<Void, any Error>)
        case callback(@Sendable () -> Void)

        func fire(cancelled: Bool) {
            switch self {
            case .sleeper(let continuation):
                if cancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume() }
            case .callback(let body):
                if !cancelled { body() }
            }
        }
    }

    private struct State {
        var now: Duration
        var nextID: UInt64 = 0
        var pending: [(deadline: Duration, id: UInt64, waiter: Waiter)] = []
        var watchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []

        mutating func add(_ deadline: Duration, _ waiter: Waiter) -> (UInt64, [CheckedContinuation<Void, Never>]) {
            nextID += 1
            pending.append((deadline, nextID, waiter))
            let count = pending.count
            let ready = watchers.filter { $0.count <= count }.map(\.continuation)
            watchers.removeAll { $0.count <= count }
            return (nextID, ready)
        }
    }

    private let state: Mutex<State>

    /// A clock that reads `start` until advanced.
    public init(start: Duration = .zero) {
        state = Mutex(State(now: start))
    }

    /// Time since the clock's origin.
    public var now: Duration { state.withLock { $0.now } }

    /// How many sleepers and callbacks are waiting for time to pass.
    public var pendingCount: Int { state.withLock { $0.pending.count } }

    /// Returns once the clock has been advanced by `duration`, or throws `CancellationError` as soon as
    /// the task is cancelled.
    public func sleep(for duration: Duration) async throws {
        // Cancellation may race the registration; both sides decide under this one lock.
        let registration = Mutex<(id: UInt64?, cancelled: Bool)>((nil, false))
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ready = registration.withLock { registration -> [CheckedContinuation<Void, Never>]? in
                    if registration.cancelled { return nil }
                    let (added, ready) = state.withLock { $0.add($0.now + duration, .sleeper(continuation)) }
                    registration.id = added
                    return ready
                }
                guard let ready else { return continuation.resume(throwing: CancellationError()) }
                for watcher in ready { watcher.resume() }
            }
        } onCancel: {
            let id = registration.withLock { registration in
                registration.cancelled = true
                return registration.id
            }
            if let id { remove(id)?.fire(cancelled: true) }
        }
    }

    /// Runs `body` once the clock has been advanced by `delay`, unless the timer is cancelled first.
    @discardableResult
    public func after(_ delay: Duration, _ body: @escaping @Sendable () -> Void) -> Timer {
        let (id, ready) = state.withLock { $0.add($0.now + delay, .callback(body)) }
        for watcher in ready { watcher.resume() }
        return Timer(clock: self, id: id)
    }

    /// Moves time forward by `duration`, firing everything due on the way with `now` set to its deadline.
    public func advance(by duration: Duration) {
        let target = state.withLock { $0.now + duration }
        while let due = state.withLock({ state -> Waiter? in
            guard let index = state.pending.indices.min(by: {
                (state.pending[$0].deadline, state.pending[$0].id) < (state.pending[$1].deadline, state.pending[$1].id)
            }), state.pending[index].deadline <= target else { return nil }
            let entry = state.pending.remove(at: index)
            state.now = max(state.now, entry.deadline)
            return entry.waiter
        }) {
            due.fire(cancelled: false)
        }
        state.withLock { $0.now = target }
    }

    /// Suspends until at least `count` sleepers and callbacks are waiting: the event that the code under
    /// test has reached its next timed wait.
    public func waitForPending(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state in
                if state.pending.count >= count { return true }
                state.watchers.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func remove(_ id: UInt64) -> Waiter? {
        state.withLock { state in
            guard let index = state.pending.firstIndex(where: { $0.id == id }) else { return nil }
            return state.pending.remove(at: index).waiter
        }
    }
}
