/// A bounded wait that ran out.
public struct TestTimeout: Error, CustomStringConvertible {
    public var what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out: \(what)" }
}

/// Runs `operation`, failing with ``TestTimeout`` if it takes longer than `limit` (the operation is cancelled).
public func withTimeout<T: Sendable>(
    _ limit: Duration, _ what: String = "operation", _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            // The deadline itself: this sleep is what bounds the operation.
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TestTimeout(what: what) }
        return value
    }
}

/// Checks `condition` every `interval` until it holds or `timeout` passes; returns whether it held.
/// Only for state that has no event to await: another process opening a port, writing a file or a
/// log line, a background task whose progress nothing announces.
public func waitUntil(
    timeout: Duration, every interval: Duration = .milliseconds(10), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        if Task.isCancelled { return false }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}

/// Like ``waitUntil(timeout:every:_:)``, but throws ``TestTimeout`` naming `what` when time runs out.
public func waitUntil(
    _ what: String, timeout: Duration, every interval: Duration = .milliseconds(10), _ condition: () async throws -> Bool
) async throws {
    guard try await waitUntil(timeout: timeout, every: interval, condition) else { throw TestTimeout(what: what) }
}

/// Runs `body`, then `cleanup` whether or not it threw (async clean-up cannot go in a `defer`).
public func withCleanup<T>(_ body: () async throws -> T, cleanup: () async -> Void) async throws -> T {
    do {
        let value = try await body()
        await cleanup()
        return value
    } catch {
        await cleanup()
        throw error
    }
}
