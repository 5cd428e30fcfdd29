import DequeModule
import NIOConcurrencyHelpers

/// A counting semaphore for async code: waiters are served strictly in arrival order, and a
/// waiter whose task is cancelled leaves the queue at once (throwing `CancellationError`) without
/// consuming a permit.
final class FIFOAsyncSemaphore: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var available: Int
        var waiters: Deque<Waiter> = []
        var nextId: UInt64 = 0
    }

    /// The number of permits the semaphore was created with.
    let permits: Int
    private let state: NIOLockedValueBox<State>

    init(permits: Int) {
        self.permits = max(1, permits)
        self.state = NIOLockedValueBox(State(available: max(1, permits)))
    }

    /// Permits not held by anyone right now.
    var available: Int { state.withLockedValue { $0.available } }
    /// Tasks queued for a permit.
    var waiting: Int { state.withLockedValue { $0.waiters.count } }

    /// Takes a permit if one is free and nobody is queued; never waits.
    func tryAcquire() -> Bool {
        state.withLockedValue { state in
            guard state.available > 0, state.waiters.isEmpty else { return false }
            state.available -= 1
            return true
        }
    }

    /// Waits for a permit in FIFO order. Throws `CancellationError` if the task is cancelled
    /// before the permit is granted; then no permit is held.
    func acquire() async throws {
        if tryAcquire() { return }
        let id = state.withLockedValue { state in
            defer { state.nextId &+= 1 }
            return state.nextId
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Outcome { case granted, cancelled, queued }
                let outcome = state.withLockedValue { state -> Outcome in
                    // Checked under the lock: a cancel that lands before the enqueue is seen here,
                    // one that lands after finds the waiter in the queue.
                    if Task.isCancelled { return .cancelled }
                    if state.available > 0, state.waiters.isEmpty {
                        state.available -= 1
                        return .granted
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return .queued
                }
                switch outcome {
                case .granted: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .queued: break
                }
            }
        } onCancel: {
            let continuation = state.withLockedValue { state -> CheckedContinuation<Void, any Error>? in
                guard let position = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: position).continuation
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    /// Returns a permit, handing it straight to the longest waiter if there is one.
    func release() {
        let next = state.withLockedValue { state -> CheckedContinuation<Void, any Error>? in
            if let waiter = state.waiters.popFirst() { return waiter.continuation }
            state.available = min(state.available + 1, permits)
            return nil
        }
        next?.resume()
    }
}
