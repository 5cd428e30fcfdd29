import NIOCore
import Synchronization

/// A value delivered once, awaited by at most one reader; awaiting is cancellation-aware.
final class OneShot<Value: Sendable>: Sendable {
    private enum State {
        case empty
        case waiting(CheckedContinuation<Value?, Never>)
        case done(Value?)
    }

    private let state = Mutex<State>(.empty)

    func fulfill(_ value: Value?) {
        let waiter: CheckedContinuation<Value?, Never>? = state.withLock { state in
            switch state {
            case .empty:
                state = .done(value)
                return nil
            case let .waiting(continuation):
                state = .done(value)
                return continuation
            case .done:
                return nil
            }
        }
        waiter?.resume(returning: value)
    }

    /// The delivered value without waiting: nil while nothing has been delivered yet.
    var delivered: Value?? {
        state.withLock { state in
            if case let .done(value) = state { return .some(value) }
            return nil
        }
    }

    /// The value, or nil when the awaiting task was cancelled (or nil was delivered).
    func value() async -> Value? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
                let ready: Value?? = state.withLock { state in
                    switch state {
                    case .empty:
                        state = .waiting(continuation)
                        return .none
                    case let .done(value):
                        return .some(value)
                    case .waiting:
                        // Single reader by construction; a second one gets nothing rather than a trap.
                        return .some(nil)
                    }
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            fulfill(nil)
        }
    }
}

/// A result set once and awaited by any number of readers (unlike an `EventLoopPromise`, it may stay unset forever).
final class AsyncResult<Value: Sendable>: Sendable {
    private enum State {
        case pending([CheckedContinuation<Value, any Error>])
        case done(Result<Value, any Error>)
    }

    private let state = Mutex<State>(.pending([]))

    func set(_ result: Result<Value, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value, any Error>] in
            guard case let .pending(waiters) = state else { return [] }
            state = .done(result)
            return waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    func get() async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<Value, any Error>? in
                switch state {
                case var .pending(waiters):
                    waiters.append(continuation)
                    state = .pending(waiters)
                    return nil
                case let .done(result):
                    return result
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
