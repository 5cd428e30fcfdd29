import NIOConcurrencyHelpers
import Testing

@testable import BrokerCore
import TestKit

@Suite struct CostBoundedLRUTests {
    @Test func matchesAReferenceModelAndNeverExceedsItsCapacity() {
        let capacity = 200
        var lru = CostBoundedLRU<Int, Int>(capacity: capacity)
        // Most recent first.
        var model: [(key: Int, cost: Int)] = []
        var random = SeededRandom(seed: 11)
        var evictions = 0
        for step in 0..<5_000 {
            let key = Int.random(in: 0..<24, using: &random)
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<5:
                let cost = Int.random(in: 0...(capacity + 20), using: &random) / (step % 7 == 0 ? 1 : 6)
                let result = lru.insert(key * 1000 + cost, for: key, cost: cost)
                if cost > capacity {
                    #expect(result == nil)
                } else {
                    model.removeAll { $0.key == key }
                    var dropped = 0
                    while model.reduce(0, { $0 + $1.cost }) + cost > capacity {
                        model.removeLast()
                        dropped += 1
                    }
                    model.insert((key, cost), at: 0)
                    #expect(result == dropped)
                    evictions += dropped
                }
            case 5..<8:
                let value = lru.value(for: key)
                if let position = model.firstIndex(where: { $0.key == key }) {
                    let entry = model.remove(at: position)
                    model.insert(entry, at: 0)
                    #expect(value == key * 1000 + entry.cost)
                } else {
                    #expect(value == nil)
                }
            default:
                lru.remove(key)
                model.removeAll { $0.key == key }
            }
            #expect(lru.keysByRecency == model.map(\.key))
            #expect(lru.totalCost == model.reduce(0) { $0 + $1.cost })
            #expect(lru.totalCost <= capacity)
            #expect(lru.count == model.count)
        }
        #expect(evictions > 0)
    }

    @Test func zeroCapacityKeepsNothing() {
        var lru = CostBoundedLRU<String, Int>(capacity: 0)
        #expect(lru.insert(1, for: "a", cost: 1) == nil)
        #expect(lru.insert(2, for: "b", cost: 0) == 0)
        #expect(lru.value(for: "a") == nil)
        #expect(lru.totalCost == 0)
    }
}

@Suite(.timeLimit(.minutes(1))) struct FIFOAsyncSemaphoreTests {
    @Test func waitersAreServedInArrivalOrder() async throws {
        let semaphore = FIFOAsyncSemaphore(permits: 1)
        try await semaphore.acquire()
        let order = NIOLockedValueBox<[Int]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in 0..<6 {
                group.addTask {
                    try await semaphore.acquire()
                    order.withLockedValue { $0.append(id) }
                    semaphore.release()
                }
                // Queue them one by one so arrival order is known.
                #expect(await waitUntil(timeout: .seconds(5)) { semaphore.waiting == id + 1 })
            }
            semaphore.release()
            try await group.waitForAll()
        }
        #expect(order.withLockedValue { $0 } == Array(0..<6))
        #expect(semaphore.available == 1)
    }

    @Test func cancelledWaiterLeavesTheQueueWithoutAPermit() async throws {
        let semaphore = FIFOAsyncSemaphore(permits: 1)
        try await semaphore.acquire()
        let cancelled = Task { try await semaphore.acquire() }
        #expect(await waitUntil(timeout: .seconds(5)) { semaphore.waiting == 1 })
        let patient = Task {
            try await semaphore.acquire()
            semaphore.release()
        }
        #expect(await waitUntil(timeout: .seconds(5)) { semaphore.waiting == 2 })
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(semaphore.waiting == 1)
        semaphore.release()
        try await patient.value
        // Nothing leaked: the one permit is free again and can be taken without waiting.
        #expect(semaphore.available == 1)
        #expect(semaphore.tryAcquire())
        #expect(!semaphore.tryAcquire())
    }

    @Test func alreadyCancelledTaskDoesNotQueue() async throws {
        let semaphore = FIFOAsyncSemaphore(permits: 1)
        try await semaphore.acquire()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await semaphore.acquire()
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(semaphore.waiting == 0)
        semaphore.release()
        #expect(semaphore.available == 1)
    }
}
