import KafkaProtocol
import TestKit
import Testing

@testable import BrokerCore

/// The KIP-227 session rules, step by step: requests in, plans and answers out, no broker.
@Suite struct FetchSessionCacheTests {
    typealias Cache = FetchSessionCache
    typealias Ref = FetchSessionCache.PartitionRef

    static func ref(_ topic: String, _ partition: Int32) -> Ref { Ref(topic: topic, partition: partition) }

    static func request(
        id: Int32, epoch: Int32, _ partitions: [(Ref, Int64)] = [], forgotten: [Ref] = [], usesTopicIds: Bool = false
    ) -> Cache.Request {
        Cache.Request(
            sessionId: id, sessionEpoch: epoch, usesTopicIds: usesTopicIds,
            partitions: partitions.map { (ref: $0.0, position: Cache.Position(fetchOffset: $0.1, partitionMaxBytes: 1 << 20)) },
            forgotten: forgotten)
    }

    /// A partition whose answer has no records and high watermark `hw` (log start 0).
    static func quiet(_ hw: Int64) -> Cache.Outcome {
        Cache.Outcome(reported: .init(highWatermark: hw, lastStableOffset: hw, logStartOffset: 0), returnedRecords: false)
    }

    static func withRecords(_ hw: Int64) -> Cache.Outcome {
        Cache.Outcome(reported: .init(highWatermark: hw, lastStableOffset: hw, logStartOffset: 0), returnedRecords: true)
    }

    static let failed = Cache.Outcome(reported: nil, returnedRecords: false)

    static func cache(slots: Int = 10, minEvictionAgeMs: Int64 = 1_000, maxPartitions: Int = 1_000) -> SeededCache {
        SeededCache(cache: Cache(configuration: .init(slots: slots, minEvictionAgeMs: minEvictionAgeMs, maxPartitions: maxPartitions)))
    }

    /// The plan `begin` gives, failing the test on a refusal.
    static func plan(_ cache: inout SeededCache, _ request: Cache.Request, at now: Int64 = 0, sourceLocation: SourceLocation = #_sourceLocation) throws -> Cache.Plan {
        switch cache.begin(request, nowMs: now) {
        case .fetch(let plan): return plan
        case .refused(let code): throw FetchSessionTestFailure("refused with \(code.name)")
        }
    }

    static func refusal(_ cache: inout SeededCache, _ request: Cache.Request, at now: Int64 = 0) -> KafkaErrorCode? {
        if case .refused(let code) = cache.begin(request, nowMs: now) { return code }
        return nil
    }

    /// Creates a session of `partitions` (each at offset 0, high watermark 0) and returns its id.
    static func established(_ cache: inout SeededCache, _ partitions: [Ref], at now: Int64 = 0) throws -> Int32 {
        let plan = try plan(&cache, request(id: 0, epoch: 0, partitions.map { ($0, 0) }), at: now)
        let answer = cache.finish(plan, outcomes: partitions.map { _ in quiet(0) }, nowMs: now)
        #expect(answer.sessionId != 0)
        return answer.sessionId
    }

    @Test func aFullRequestWithEpochZeroCreatesASession() throws {
        var cache = Self.cache()
        let partitions = [Self.ref("a", 0), Self.ref("a", 1), Self.ref("b", 0)]
        let plan = try Self.plan(&cache, Self.request(id: 0, epoch: 0, [(partitions[0], 5), (partitions[1], 0), (partitions[2], 0), (partitions[0], 7)]))
        #expect(plan.kind == .creating)
        #expect(plan.partitions.map(\.ref) == partitions, "each partition once, where first listed")
        #expect(plan.partitions[0].position.fetchOffset == 7, "with the position it was last listed with")
        let answer = cache.finish(plan, outcomes: [Self.quiet(5), Self.quiet(0), Self.failed], nowMs: 0)
        #expect(answer.sessionId != 0)
        #expect(answer.include == [0, 1, 2], "a full answer names every partition")
        let session = try #require(cache.session(answer.sessionId))
        #expect(session.nextEpoch == 1)
        #expect(session.partitions.keys.elements == partitions)
        #expect(session.partitions[partitions[2]]?.reported == nil, "a failed partition is reported again once it recovers")
        #expect(cache.count == 1)
    }

    @Test func epochMinusOneIsSessionlessAndNoSlotsMeansNoSessions() throws {
        var cache = Self.cache()
        let plan = try Self.plan(&cache, Self.request(id: 0, epoch: -1, [(Self.ref("a", 0), 0)]))
        #expect(plan.kind == .sessionless)
        #expect(cache.finish(plan, outcomes: [Self.quiet(0)], nowMs: 0) == .init(sessionId: 0, include: [0]))
        #expect(cache.count == 0)

        var none = Self.cache(slots: 0)
        let refused = try Self.plan(&none, Self.request(id: 0, epoch: 0, [(Self.ref("a", 0), 0)]))
        #expect(refused.kind == .sessionless)
        #expect(none.finish(refused, outcomes: [Self.quiet(0)], nowMs: 0).sessionId == 0)
        // Nothing to fetch: no session either.
        let empty = try Self.plan(&cache, Self.request(id: 0, epoch: 0))
        #expect(cache.finish(empty, outcomes: [], nowMs: 0).sessionId == 0)
        #expect(cache.count == 0)
    }

    @Test func unknownSessionsAreNotFound() throws {
        var cache = Self.cache()
        #expect(Self.refusal(&cache, Self.request(id: 42, epoch: 1)) == .fetchSessionIdNotFound)
        #expect(Self.refusal(&cache, Self.request(id: 0, epoch: 3)) == .fetchSessionIdNotFound, "id 0 names no session")
        let id = try Self.established(&cache, [Self.ref("a", 0)])
        #expect(Self.refusal(&cache, Self.request(id: id &+ 1, epoch: 1)) == .fetchSessionIdNotFound)
    }

    @Test func incrementalRequestsMustCarryTheNextEpoch() throws {
        var cache = Self.cache()
        let id = try Self.established(&cache, [Self.ref("a", 0)])
        #expect(Self.refusal(&cache, Self.request(id: id, epoch: 2)) == .invalidFetchSessionEpoch)
        let first = try Self.plan(&cache, Self.request(id: id, epoch: 1))
        #expect(first.isIncremental)
        _ = cache.finish(first, outcomes: [Self.quiet(0)], nowMs: 0)
        #expect(Self.refusal(&cache, Self.request(id: id, epoch: 1)) == .invalidFetchSessionEpoch, "a repeated epoch is refused")
        #expect(try Self.plan(&cache, Self.request(id: id, epoch: 2)).isIncremental)
        #expect(cache.session(id)?.nextEpoch == 3)
        #expect(Self.refusal(&cache, Self.request(id: id, epoch: 3, usesTopicIds: true)) == .fetchSessionTopicIdError)
        #expect(Cache.epoch(after: Int32.max) == 1, "epochs wrap to 1, never 0 or -1")
    }

    @Test func finalOrInitialEpochClosesTheSession() throws {
        var cache = Self.cache()
        let id = try Self.established(&cache, [Self.ref("a", 0)])
        let closing = try Self.plan(&cache, Self.request(id: id, epoch: -1, [(Self.ref("a", 0), 3)]))
        #expect(closing.kind == .sessionless)
        #expect(closing.partitions.map(\.position.fetchOffset) == [3], "a full fetch of what it lists")
        #expect(cache.session(id) == nil)
        #expect(Self.refusal(&cache, Self.request(id: id, epoch: 1)) == .fetchSessionIdNotFound)

        let second = try Self.established(&cache, [Self.ref("a", 0)])
        let restart = try Self.plan(&cache, Self.request(id: second, epoch: 0, [(Self.ref("b", 0), 0)]))
        #expect(restart.kind == .creating)
        #expect(cache.session(second) == nil)
        let third = cache.finish(restart, outcomes: [Self.quiet(0)], nowMs: 0).sessionId
        #expect(third != 0 && third != second)
        #expect(cache.session(third)?.partitions.keys.elements == [Self.ref("b", 0)])
        #expect(cache.count == 1)
    }

    @Test func forgottenPartitionsLeaveAndListedOnesJoinOrMove() throws {
        var cache = Self.cache()
        let (a0, a1, b0) = (Self.ref("a", 0), Self.ref("a", 1), Self.ref("b", 0))
        let id = try Self.established(&cache, [a0, a1])
        let plan = try Self.plan(&cache, Self.request(id: id, epoch: 1, [(b0, 0), (a0, 9)], forgotten: [a1]))
        #expect(plan.partitions.map(\.ref) == [a0, b0], "a1 forgotten, b0 added at the end")
        #expect(plan.partitions.map(\.position.fetchOffset) == [9, 0], "a0 moved to its new offset")
        #expect(plan.partitions.map { $0.reported != nil } == [true, false], "b0 was never reported")
        _ = cache.finish(plan, outcomes: [Self.quiet(0), Self.quiet(0)], nowMs: 0)

        // Forgotten and listed at once: the partition starts over.
        let reset = try Self.plan(&cache, Self.request(id: id, epoch: 2, [(a0, 9)], forgotten: [a0]))
        #expect(reset.partitions.map(\.ref) == [b0, a0])
        #expect(reset.partitions.last?.reported == nil)
        _ = cache.finish(reset, outcomes: [Self.quiet(0), Self.quiet(0)], nowMs: 0)

        // Forgetting everything closes the session.
        let empty = try Self.plan(&cache, Self.request(id: id, epoch: 3, forgotten: [a0, b0]))
        #expect(empty.kind == .sessionless)
        #expect(empty.partitions.isEmpty)
        #expect(cache.finish(empty, outcomes: [], nowMs: 0).sessionId == 0)
        #expect(cache.session(id) == nil)
    }

    @Test func incrementalAnswersNameOnlyPartitionsWithNews() throws {
        var cache = Self.cache()
        let refs = (0..<5).map { Self.ref("t", $0) }
        let id = try Self.established(&cache, refs)
        var epoch: Int32 = 1
        func step(_ outcomes: [Cache.Outcome]) throws -> [Ref] {
            let plan = try Self.plan(&cache, Self.request(id: id, epoch: epoch))
            epoch += 1
            #expect(plan.partitions.count == outcomes.count, "an incremental request fetches every partition of the session")
            return cache.finish(plan, outcomes: outcomes, nowMs: 0).include.map { plan.partitions[$0].ref }
        }
        // Nothing moved: nothing to say.
        #expect(try step(refs.map { _ in Self.quiet(0) }) == [])
        // Records on 1, a new high watermark on 3 (no records: the client is at its end), an error on 4.
        #expect(try step([Self.quiet(0), Self.withRecords(4), Self.quiet(0), Self.quiet(2), Self.failed]) == [refs[1], refs[3], refs[4]])
        let order = try #require(cache.session(id)).partitions.keys.elements
        #expect(order == [refs[0], refs[2], refs[3], refs[4], refs[1]], "the partition that returned records moved to the end")
        // The error is in every answer until it clears; then the partition is named once more.
        #expect(try step([Self.quiet(0), Self.quiet(0), Self.quiet(2), Self.failed, Self.quiet(4)]) == [refs[4]])
        #expect(try step([Self.quiet(0), Self.quiet(0), Self.quiet(2), Self.quiet(0), Self.quiet(4)]) == [refs[4]])
        #expect(try step([Self.quiet(0), Self.quiet(0), Self.quiet(2), Self.quiet(0), Self.quiet(4)]) == [])
        // A last stable offset, log start offset or preferred read replica change is news too.
        var stable = Self.quiet(0)
        stable.reported?.lastStableOffset = 1
        var start = Self.quiet(2)
        start.reported?.logStartOffset = 1
        var replica = Self.quiet(0)
        replica.reported?.preferredReadReplica = 3
        #expect(try step([stable, Self.quiet(0), start, replica, Self.quiet(4)]) == [refs[0], refs[3], refs[4]])
        #expect(try step([stable, Self.quiet(0), start, replica, Self.quiet(4)]) == [])
    }

    @Test func answersToASessionEvictedMeanwhileStillNameTheirNews() throws {
        var cache = Self.cache(slots: 1, minEvictionAgeMs: 0)
        let id = try Self.established(&cache, [Self.ref("a", 0)])
        let plan = try Self.plan(&cache, Self.request(id: id, epoch: 1))
        let other = try Self.established(&cache, [Self.ref("b", 0)], at: 5)
        #expect(cache.session(id) == nil && cache.session(other) != nil)
        let answer = cache.finish(plan, outcomes: [Self.withRecords(3)], nowMs: 6)
        #expect(answer == .init(sessionId: id, include: [0]))
        #expect(Self.refusal(&cache, Self.request(id: id, epoch: 2)) == .fetchSessionIdNotFound)
    }

    @Test func aFullCacheEvictsTheIdleFirstThenTheSmallest() throws {
        var cache = Self.cache(slots: 2, minEvictionAgeMs: 100)
        let large = try Self.established(&cache, (0..<3).map { Self.ref("large", $0) }, at: 0)
        let small = try Self.established(&cache, [Self.ref("small", 0)], at: 10)
        #expect(cache.victims(size: 1, nowMs: 20) == nil, "nothing idle long enough, nothing smaller")
        #expect(cache.victims(size: 2, nowMs: 20) == [small], "smaller than the new session")
        #expect(cache.victims(size: 1, nowMs: 100) == [large], "idle for the minimum age: evicted whatever its size")

        // No room and nothing to evict: the new client stays sessionless.
        let refused = try Self.plan(&cache, Self.request(id: 0, epoch: 0, [(Self.ref("new", 0), 0)]), at: 20)
        #expect(cache.finish(refused, outcomes: [Self.quiet(0)], nowMs: 20) == .init(sessionId: 0, include: [0]))
        #expect(Set([large, small]) == Set(cache.sessions.keys))

        // Two partitions beat the one-partition session.
        let bigger = try Self.plan(&cache, Self.request(id: 0, epoch: 0, [(Self.ref("new", 0), 0), (Self.ref("new", 1), 0)]), at: 30)
        let answer = cache.finish(bigger, outcomes: [Self.quiet(0), Self.quiet(0)], nowMs: 30)
        #expect(answer.sessionId != 0)
        #expect(answer.evicted == [small])
        #expect(Set([large, answer.sessionId]) == Set(cache.sessions.keys))

        // Using a session keeps it from being idle: the large one, used at 90, outlives the new one at 200.
        _ = cache.finish(try Self.plan(&cache, Self.request(id: large, epoch: 1), at: 90), outcomes: (0..<3).map { _ in Self.quiet(0) }, nowMs: 90)
        let late = try Self.plan(&cache, Self.request(id: 0, epoch: 0, [(Self.ref("late", 0), 0)]), at: 200)
        #expect(cache.finish(late, outcomes: [Self.quiet(0)], nowMs: 200).evicted == [answer.sessionId])
    }

    @Test func thePartitionBudgetBoundsTheCache() throws {
        var cache = Self.cache(slots: 10, minEvictionAgeMs: 100, maxPartitions: 5)
        func refs(_ topic: String, _ count: Int) -> [Ref] { (0..<count).map { Self.ref(topic, Int32($0)) } }
        let large = try Self.established(&cache, refs("large", 3), at: 0)
        let small = try Self.established(&cache, refs("small", 1), at: 10)
        #expect(cache.cachedPartitions == 4)
        // Three more fit only by evicting both, and the large one may not go: nothing is evicted.
        #expect(cache.victims(size: 3, nowMs: 20) == nil)
        #expect(cache.victims(size: 6, nowMs: 1_000) == nil, "larger than the whole budget")
        let pair = try Self.plan(&cache, Self.request(id: 0, epoch: 0, refs("pair", 2).map { ($0, 0) }), at: 20)
        let answer = cache.finish(pair, outcomes: [Self.quiet(0), Self.quiet(0)], nowMs: 20)
        #expect(answer.evicted == [small])
        #expect(Set(cache.sessions.keys) == [large, answer.sessionId])
        #expect(cache.cachedPartitions == 5)

        // Growing past the budget closes the session; its client starts over with a full request.
        #expect(Self.refusal(&cache, Self.request(id: large, epoch: 1, [(Self.ref("large", 3), 0)]), at: 30) == .fetchSessionIdNotFound)
        #expect(cache.session(large) == nil)
        #expect(cache.cachedPartitions == 2)

        // Idle sessions go first, as many as it takes.
        let more = try Self.established(&cache, refs("more", 2), at: 40)
        let all = try Self.plan(&cache, Self.request(id: 0, epoch: 0, refs("all", 5).map { ($0, 0) }), at: 500)
        let fresh = cache.finish(all, outcomes: (0..<5).map { _ in Self.quiet(0) }, nowMs: 500)
        #expect(fresh.evicted == [answer.sessionId, more], "least recently used first")
        #expect(Array(cache.sessions.keys) == [fresh.sessionId])
        #expect(cache.cachedPartitions == 5)
    }

    @Test func sessionIdsComeFromTheGivenGeneratorAndNeverRepeatALiveOne() throws {
        var first = Self.cache(slots: 100)
        var second = Self.cache(slots: 100)
        var ids: [Int32] = []
        for index in 0..<50 {
            let id = try Self.established(&first, [Self.ref("t", Int32(index))])
            #expect(try Self.established(&second, [Self.ref("t", Int32(index))]) == id, "the same seed gives the same ids")
            ids.append(id)
        }
        #expect(Set(ids).count == 50)
        #expect(ids.allSatisfy { $0 > 0 })

        // A generator that draws the same value again: the live id is skipped.
        struct Stuck: RandomNumberGenerator {
            var draws: [UInt64] = [42, 42, 42, 43]
            mutating func next() -> UInt64 { draws.count > 1 ? draws.removeFirst() : draws[0] }
        }
        var cache = FetchSessionCache(configuration: .init(slots: 10, minEvictionAgeMs: 0, maxPartitions: 10))
        var stuck = Stuck()
        var created: [Int32] = []
        for topic in ["a", "b"] {
            guard case .fetch(let plan) = cache.begin(Self.request(id: 0, epoch: 0, [(Self.ref(topic, 0), 0)]), nowMs: 0) else {
                Issue.record("refused")
                return
            }
            created.append(cache.finish(plan, outcomes: [Self.quiet(0)], nowMs: 0, using: &stuck).sessionId)
        }
        #expect(created[0] != 0 && created[1] != 0 && created[0] != created[1], "\(created)")
        #expect(stuck.draws == [43], "the second session drew again after the repeated value")
    }
}

/// A cache with the seeded generator its session ids come from.
@dynamicMemberLookup
struct SeededCache {
    var cache: FetchSessionCache
    var random = SeededRandom(seed: 7)

    subscript<T>(dynamicMember key: KeyPath<FetchSessionCache, T>) -> T { cache[keyPath: key] }

    func session(_ id: Int32) -> FetchSessionCache.Session? { cache.session(id) }
    func victims(size: Int, nowMs: Int64) -> [Int32]? { cache.victims(size: size, nowMs: nowMs) }

    mutating func begin(_ request: FetchSessionCache.Request, nowMs: Int64) -> FetchSessionCache.Begin {
        cache.begin(request, nowMs: nowMs)
    }

    mutating func finish(_ plan: FetchSessionCache.Plan, outcomes: [FetchSessionCache.Outcome], nowMs: Int64) -> FetchSessionCache.Answer {
        cache.finish(plan, outcomes: outcomes, nowMs: nowMs, using: &random)
    }
}

struct FetchSessionTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
