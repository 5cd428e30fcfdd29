import NIOConcurrencyHelpers

/// Counters of one `SingleFlightCache`.
struct SingleFlightCacheCounters: Sendable, Equatable {
    var hits = 0
    var misses = 0
    /// Requests that found a load of the same key under way and waited for it instead of loading.
    var joins = 0
    var evictions = 0
    /// Loaded values costing more than the whole capacity, handed out but not kept.
    var uncacheable = 0
    /// Background loads started by `prefetch`.
    var prefetches = 0
    var loadFailures = 0
}

/// A bounded LRU cache whose misses are loaded once however many callers ask at the same time
/// (single flight). Loads run in their own task: a caller that is cancelled stops waiting, but
/// the load goes on and its value still lands in the cache for the next reader.
final class SingleFlightCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private typealias Waiter = CheckedContinuation<Value, any Error>

    private enum Step {
        case hit(Value), cancelled, joined, start
    }

    private struct State: Sendable {
        var lru: CostBoundedLRU<Key, Value>
        var flights: [Key: [UInt64: Waiter]] = [:]
        var nextWaiter: UInt64 = 0
        var counters = SingleFlightCacheCounters()
    }

    private let state: NIOLockedValueBox<State>
    private let cost: @Sendable (Value) -> Int

    /// A cache holding at most `capacity` total cost, each value costing `cost(value)`.
    init(capacity: Int, cost: @escaping @Sendable (Value) -> Int) {
        self.state = NIOLockedValueBox(State(lru: CostBoundedLRU(capacity: capacity)))
        self.cost = cost
    }

    var counters: SingleFlightCacheCounters { state.withLockedValue { $0.counters } }
    /// Summed cost of the cached values (never above the capacity).
    var totalCost: Int { state.withLockedValue { $0.lru.totalCost } }
    var count: Int { state.withLockedValue { $0.lru.count } }
    var capacity: Int { state.withLockedValue { $0.lru.capacity } }
    /// Keys being loaded right now.
    var loading: Int { state.withLockedValue { $0.flights.count } }

    /// The cached value for `key`, if any, without counting a hit or a miss.
    func cachedValue(for key: Key) -> Value? { state.withLockedValue { $0.lru.value(for: key) } }

    /// Whether `key` is cached, without touching its recency or the counters.
    func contains(_ key: Key) -> Bool { state.withLockedValue { $0.lru.contains(key) } }

    /// The cached value for `key`, or the result of the one load under way for it, or of a new
    /// load started with `load`.
    func value(for key: Key, load: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let (cached, waiterId) = state.withLockedValue { state -> (Value?, UInt64) in
            if let value = state.lru.value(for: key) {
                state.counters.hits += 1
                return (value, 0)
            }
            defer { state.nextWaiter &+= 1 }
            return (nil, state.nextWaiter)
        }
        if let cached { return cached }

        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: Waiter) in
                let step = state.withLockedValue { state -> Step in
                    if Task.isCancelled { return .cancelled }
                    // The load may have finished between the first look and now.
                    if let value = state.lru.value(for: key) {
                        state.counters.hits += 1
                        return .hit(value)
                    }
                    if state.flights[key] != nil {
                        state.flights[key]?[waiterId] = waiter
                        state.counters.joins += 1
                        return .joined
                    }
                    state.flights[key] = [waiterId: waiter]
                    state.counters.misses += 1
                    return .start
                }
                switch step {
                case .hit(let value): waiter.resume(returning: value)
                case .cancelled: waiter.resume(throwing: CancellationError())
                case .joined: break
                case .start: startLoad(key, load)
                }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state in state.flights[key]?.removeValue(forKey: waiterId) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Starts loading `key` in the background unless it is cached or already loading; nobody
    /// waits for the result, which only fills the cache. Returns whether a load was started.
    @discardableResult
    func prefetch(_ key: Key, load: @escaping @Sendable () async throws -> Value) -> Bool {
        let start = state.withLockedValue { state -> Bool in
            guard !state.lru.contains(key), state.flights[key] == nil else { return false }
            state.flights[key] = [:]
            state.counters.prefetches += 1
            return true
        }
        if start { startLoad(key, load) }
        return start
    }

    private func startLoad(_ key: Key, _ load: @escaping @Sendable () async throws -> Value) {
        Task {
            let result: Result<Value, any Error>
            do { result = .success(try await load()) } catch { result = .failure(error) }
            finish(key, result)
        }
    }

    private func finish(_ key: Key, _ result: Result<Value, any Error>) {
        let valueCost = (try? result.get()).map(cost)
        let waiters = state.withLockedValue { state -> [Waiter] in
            switch result {
            case .success(let value):
                if let evicted = state.lru.insert(value, for: key, cost: valueCost ?? 0) {
                    state.counters.evictions += evicted
                } else {
                    state.counters.uncacheable += 1
                }
            case .failure:
                // Failures are not cached: the next reader tries again.
                state.counters.loadFailures += 1
            }
            return Array((state.flights.removeValue(forKey: key) ?? [:]).values)
        }
        for waiter in waiters { waiter.resume(with: result) }
    }
}
