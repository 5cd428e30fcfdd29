import NIOCore
import NIOPosix

/// Process-wide runtime choices of a service.
public enum FloeRuntime {
    /// Makes the NIO event loops Swift concurrency's global executor, with `loops` of them (nil: one
    /// per core). A request then goes from socket to handler to response mostly on one thread: a task
    /// resumed by an event loop runs on that loop, where it would otherwise wake a thread of Swift's
    /// pool and hand its writes back. Each such hand-off costs tens of microseconds on an idle virtual
    /// machine, and a produce crosses several. Only for processes whose tasks never block: blocking
    /// I/O must stay on thread pools (the WAL's I/O thread, the object stores' pools), since a blocked
    /// task now stalls sockets. Call once, before anything uses NIO.
    public static func runTasksOnEventLoops(loops: Int? = nil) {
        if let loops { NIOSingletons.groupLoopCountSuggestion = max(1, loops) }
        _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}

/// A command whose process runs its tasks on a chosen number of event loops (`--event-loops`).
public protocol EventLoopSizing {
    /// Event-loop threads to start.
    var eventLoops: Int { get }
}
