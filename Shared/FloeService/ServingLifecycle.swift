import ServiceLifecycle

/// The shutdown order a serving node needs, with every piece a child task of the caller.
///
/// 1. `serve` starts (a listener's run loop); `started` waits until it accepts (its port is bound) and a failure there ends
///    the whole run with that error.
/// 2. The `background` jobs start (metadata follower, heartbeats, uploads, metric exports); each runs until cancelled.
/// 3. On graceful shutdown `serve` is cancelled and awaited, so no request is still being answered;
///    then `drain` runs while the background jobs still run (a last upload still sees the metadata, heartbeats keep the session);
///    then the background jobs are cancelled and awaited.
///
/// Nothing outlives the call, and a cancellation of the caller reaches every job.
public struct ServingLifecycle: Sendable {
    public typealias Job = @Sendable () async -> Void

    let serve: @Sendable () async throws -> Void
    let started: @Sendable () async throws -> Void
    let background: [Job]

    public init(
        serve: @escaping @Sendable () async throws -> Void,
        started: @escaping @Sendable () async throws -> Void,
        background: [Job]
    ) {
        self.serve = serve
        self.started = started
        self.background = background
    }

    /// Runs until graceful shutdown (or cancellation) of the enclosing service, as described on the type.
    public func run(drain: @escaping @Sendable () async -> Void = {}) async throws {
        let serve = serve, background = background
        try await withThrowingTaskGroup(of: Void.self) { serving in
            serving.addTask { try? await serve() }
            try await started()
            await withTaskGroup(of: Void.self) { working in
                for job in background { working.addTask(operation: job) }
                try? await gracefulShutdown()
                serving.cancelAll()
                try? await serving.waitForAll()
                await drain()
                working.cancelAll()
            }
        }
    }
}
