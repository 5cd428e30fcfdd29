import Synchronization

/// This broker's fetch sessions: the `FetchSessionCache` state machine behind a lock, with a
/// monotonic clock and the session metrics. Sessions live in memory only; a restarted broker has
/// none, and its clients, answered FETCH_SESSION_ID_NOT_FOUND, start new ones.
public final class FetchSessions: Sendable {
    private let cache: Mutex<FetchSessionCache>
    private let started = ContinuousClock.now

    /// `slots` is Kafka's `max.incremental.fetch.session.cache.slots`; `maxPartitions` bounds the
    /// partitions of all sessions together.
    public init(slots: Int, maxPartitions: Int, minEvictionAgeMs: Int64) {
        cache = Mutex(FetchSessionCache(configuration: .init(slots: slots, minEvictionAgeMs: minEvictionAgeMs, maxPartitions: maxPartitions)))
    }

    /// Milliseconds since this broker started: session idleness is measured on this clock.
    private var nowMs: Int64 {
        let elapsed = ContinuousClock.now - started
        return elapsed.components.seconds * 1_000 + elapsed.components.attoseconds / 1_000_000_000_000_000
    }

    /// Sessions cached.
    public var count: Int { cache.withLock { $0.count } }

    func begin(_ request: FetchSessionCache.Request) -> FetchSessionCache.Begin {
        let now = nowMs
        let (begin, sessions, partitions) = cache.withLock { cache in (cache.begin(request, nowMs: now), cache.count, cache.cachedPartitions) }
        BrokerMetrics.fetchSessions.record(sessions)
        BrokerMetrics.fetchSessionPartitions.record(partitions)
        return begin
    }

    func finish(_ plan: FetchSessionCache.Plan, outcomes: [FetchSessionCache.Outcome]) -> FetchSessionCache.Answer {
        let now = nowMs
        var random = SystemRandomNumberGenerator()
        let (answer, sessions, partitions) = cache.withLock { cache in
            (cache.finish(plan, outcomes: outcomes, nowMs: now, using: &random), cache.count, cache.cachedPartitions)
        }
        BrokerMetrics.fetchSessions.record(sessions)
        BrokerMetrics.fetchSessionPartitions.record(partitions)
        if !answer.evicted.isEmpty { BrokerMetrics.fetchSessionEvictions.increment(by: answer.evicted.count) }
        if case .creating = plan.kind, answer.sessionId != 0 { BrokerMetrics.fetchSessionsCreated.increment() }
        return answer
    }
}
