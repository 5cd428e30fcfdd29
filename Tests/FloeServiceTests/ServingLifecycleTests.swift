import FloeService
import Logging
import ServiceLifecycle
import Testing

/// What the jobs of a `ServingLifecycle` did, in the order they did it.
private actor Journal {
    private(set) var entries: [String] = []
    private var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []

    func record(_ entry: String) {
        entries.append(entry)
        let due = waiters.filter { $0.count <= entries.count }
        waiters.removeAll { $0.count <= entries.count }
        for waiter in due { waiter.continuation.resume() }
    }

    /// Returns once at least `count` entries are recorded.
    func waitFor(count: Int) async {
        if entries.count >= count { return }
        await withCheckedContinuation { waiters.append((count, $0)) }
    }
}

/// Parks until the task is cancelled.
private func untilCancelled() async {
    try? await Task.sleep(for: .seconds(86_400))
}

private struct Wrapped: Service {
    let lifecycle: ServingLifecycle
    let drain: @Sendable () async -> Void
    func run() async throws { try await lifecycle.run(drain: drain) }
}

private func runGroup(_ service: Wrapped, shutdownAfter entries: Int, journal: Journal) async throws {
    let group = ServiceGroup(services: [service], logger: Logger(label: "test"))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        await journal.waitFor(count: entries)
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}

@Suite struct ServingLifecycleTests {
    @Test func servingStopsBeforeTheDrainAndBackgroundJobsStopAfterIt() async throws {
        let journal = Journal()
        let lifecycle = ServingLifecycle(
            serve: {
                await journal.record("serving")
                await untilCancelled()
                await journal.record("serving stopped")
            },
            started: { await journal.waitFor(count: 1) },
            background: ["a", "b"].map { name in
                {
                    await journal.record("\(name) running")
                    await untilCancelled()
                    await journal.record("\(name) stopped")
                }
            })
        try await runGroup(Wrapped(lifecycle: lifecycle, drain: { await journal.record("drain") }), shutdownAfter: 3, journal: journal)
        let entries = await journal.entries
        #expect(entries.count == 7)
        #expect(entries.first == "serving")
        #expect(Set(entries[1...2]) == ["a running", "b running"])
        #expect(entries[3...4] == ["serving stopped", "drain"])
        #expect(Set(entries.dropFirst(5)) == ["a stopped", "b stopped"])
    }

    @Test func aFailureToStartServingEndsTheRunWithItsErrorAndStartsNoBackgroundJob() async throws {
        struct BindFailed: Error {}
        let journal = Journal()
        let lifecycle = ServingLifecycle(
            serve: { await journal.record("serve returned") },
            started: { throw BindFailed() },
            background: [{ await journal.record("background ran") }])
        await #expect(throws: BindFailed.self) {
            try await lifecycle.run()
        }
        #expect(await !journal.entries.contains("background ran"))
    }
}
