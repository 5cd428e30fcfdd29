import NIOCore
import NIOPosix

/// Process-wide runtime choices of a service.
public enum FloeRuntime {
    /// Makes the NIO event loops Swift concurrency's global executor. A request then goes from
    /// socket to handler to response mostly on one thread: a task resumed by an event loop runs on
    /// that loop, where it would otherwise wake a thread of Swift's pool and hand its writes back.
    /// Each such hand-off costs tens of microseconds on an idle virtual machine, and a produce
    /// crosses several. Only for processes whose tasks never block: blocking I/O must stay on thread
    /// pools (the WAL's I/O thread, the object stores' pools), since a blocked task now stalls sockets.
    /// Call once, first thing in `main`.
    public static func runTasksOnEventLoops() {
        _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
