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

/// A counting semaphore for async code that can be closed, which wakes every waiter with `false`.
final class AsyncPermits: Sendable {
    private struct State {
        var available: Int
        var closed = false
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
        var nextWaiterID: UInt64 = 0
    }

    private let state: Mutex<State>

    init(_ count: Int) {
        state = Mutex(State(available: count))
    }

    /// Takes a permit; returns false when closed or when the caller was cancelled.
    func acquire() async -> Bool {
        let id = state.withLock { state in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate: Bool? = state.withLock { state in
                    if state.closed || Task.isCancelled { return false }
                    if state.available > 0 {
                        state.available -= 1
                        return true
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(returning: false)
        }
    }

    func release(_ count: Int = 1) {
        let woken = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            var woken: [CheckedContinuation<Bool, Never>] = []
            for _ in 0..<max(0, count) {
                if state.waiters.isEmpty {
                    state.available += 1
                } else {
                    woken.append(state.waiters.removeFirst().continuation)
                }
            }
            return woken
        }
        for waiter in woken { waiter.resume(returning: true) }
    }

    func close() {
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.waiters.removeAll() }
            return state.waiters.map(\.continuation)
        }
        for waiter in waiters { waiter.resume(returning: false) }
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

/// A FIFO with one async consumer that can also take, without waiting, items whose value is already known.
final class ReadyQueue<Item: Sendable>: Sendable {
    private struct State {
        var items = CircularBuffer<Item>()
        var finished = false
        var waiter: CheckedContinuation<Item?, Never>?
    }

    private let state = Mutex(State())
    private let isReady: @Sendable (Item) -> Bool

    init(isReady: @escaping @Sendable (Item) -> Bool) {
        self.isReady = isReady
    }

    func push(_ item: Item) {
        let waiter = state.withLock { state -> CheckedContinuation<Item?, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.items.append(item)
            return nil
        }
        waiter?.resume(returning: item)
    }

    /// No more items; the consumer gets nil once the queue is empty.
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<Item?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// The next item, waiting for one; nil when finished and empty, or when the consumer is cancelled.
    func next() async -> Item? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Item?, Never>) in
                let immediate: Item?? = state.withLock { state in
                    if let item = state.items.popFirst() { return .some(item) }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Item?, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    /// The head item if `isReady` says its value is known, else nil; never waits.
    func popReady() -> Item? {
        state.withLock { state in
            guard let head = state.items.first, isReady(head) else { return nil }
            return state.items.removeFirst()
        }
    }
}
