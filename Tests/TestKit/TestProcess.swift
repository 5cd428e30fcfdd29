import Foundation
import Synchronization

/// A child process a test starts: stdout and stderr appended to a log file, stdin from /dev/null or a
/// file, its exit awaited as an event rather than polled.
public final class TestProcess: @unchecked Sendable {
    /// How a process that was waited for with a time limit ended.
    public struct Outcome: Sendable {
        public var status: Int32
        /// The limit passed and the process was SIGKILLed.
        public var timedOut: Bool
    }

    /// What the termination handler (which must not capture the process object) shares with waiters.
    private final class Exit: Sendable {
        struct State {
            var status: Int32?
            var waiters: [CheckedContinuation<Int32, Never>] = []
        }

        let state = Mutex(State())
        /// Signalled once at exit; a blocking waiter passes it on to the next.
        let semaphore = DispatchSemaphore(value: 0)
    }

    public let pid: Int32
    /// Where stdout and stderr go, if anywhere.
    public let logPath: String?
    // Kept alive for its termination handler.
    private let process: Process
    private let exit = Exit()

    /// Starts `executable` with `arguments`. With `logPath` its output is appended there (the file is
    /// created if missing), otherwise discarded; `inputPath` feeds its stdin. `environment` nil inherits ours.
    public init(
        _ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil,
        currentDirectory: String? = nil, logPath: String? = nil, inputPath: String? = nil
    ) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        var handles: [FileHandle] = []
        if let logPath {
            if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            handle.seekToEndOfFile()
            handles.append(handle)
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        if let inputPath {
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: inputPath))
            handles.append(handle)
            process.standardInput = handle
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        self.process = process
        self.logPath = logPath
        let exit = self.exit
        process.terminationHandler = { process in
            let status = process.terminationStatus
            let waiters = exit.state.withLock { state in
                state.status = status
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume(returning: status) }
            exit.semaphore.signal()
        }
        defer { for handle in handles { try? handle.close() } }
        try process.run()
        pid = process.processIdentifier
    }

    /// True until the process has exited.
    public var isRunning: Bool { exit.state.withLock { $0.status == nil } }

    /// Sends `signal`; false when the process no longer exists.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        kill(pid, signal) == 0
    }

    /// Its exit status (or terminating signal), once it has exited.
    public func exitStatus() async -> Int32 {
        await withCheckedContinuation { continuation in
            let status = exit.state.withLock { state -> Int32? in
                if let status = state.status { return status }
                state.waiters.append(continuation)
                return nil
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    /// Waits for the exit, SIGKILLing the process once `timeout` passes.
    public func wait(timeout: Duration) async -> Outcome {
        let pid = self.pid
        let killer = Task {
            // The time limit itself: the sleep is what bounds the process.
            try await Task.sleep(for: timeout)
            kill(pid, SIGKILL)
        }
        let status = await exitStatus()
        killer.cancel()
        let timedOut = (try? await killer.value) != nil
        return Outcome(status: status, timedOut: timedOut)
    }

    /// Sends `signal` and blocks until the process exits (for `defer` and other synchronous clean-up),
    /// SIGKILLing it if it is still there after `limit`; returns its status.
    @discardableResult
    public func stop(_ signal: Int32 = SIGTERM, within limit: Duration = .seconds(60)) -> Int32 {
        if exit.state.withLock({ $0.status == nil }) { kill(pid, signal) }
        let (seconds, attoseconds) = limit.components
        let deadline = DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        if exit.semaphore.wait(timeout: deadline) == .timedOut {
            kill(pid, SIGKILL)
            exit.semaphore.wait()
        }
        exit.semaphore.signal()
        return exit.state.withLock { $0.status ?? -1 }
    }

    /// The last lines of the log, for failure messages.
    public func logTail(lines: Int = 30) -> String {
        guard let logPath else { return "(no log)" }
        return fileTail(logPath, lines: lines)
    }
}

/// The process of one service a test starts, stops and starts again (a restart on the same data).
public final class ProcessSlot: Sendable {
    private let current = Mutex<TestProcess?>(nil)

    public init() {}

    /// The running process, if started and not stopped since.
    public var process: TestProcess? { current.withLock { $0 } }

    /// Starts a process in the slot (see ``TestProcess/init(_:_:environment:currentDirectory:logPath:inputPath:)``).
    public func start(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, logPath: String? = nil) throws {
        let started = try TestProcess(executable, arguments, environment: environment, logPath: logPath)
        current.withLock { $0 = started }
    }

    /// Stops the process with `signal` and empties the slot; its exit status, nil if none was running.
    @discardableResult
    public func stop(_ signal: Int32 = SIGTERM) -> Int32? {
        current.withLock { current in
            defer { current = nil }
            return current
        }?.stop(signal)
    }
}
