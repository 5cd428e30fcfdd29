import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended.
public enum ChildExit: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32)

    init(waitStatus status: Int32) {
        // The WIFEXITED/WEXITSTATUS/WTERMSIG macros are not importable; this is their Linux definition.
        let signal = status & 0x7f
        self = signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
    }

    public var description: String {
        switch self {
        case .exited(let code): "exited with code \(code)"
        case .signalled(let signal): "killed by signal \(signal)"
        }
    }
}

/// Why a child could not be started.
public struct SpawnError: Error, CustomStringConvertible {
    /// What was being started.
    public var executable: String
    /// The `errno` posix_spawn or open reported.
    public var code: Int32

    public var description: String {
        "cannot start \(executable): \(String(cString: strerror(code)))"
    }
}

/// Starting, signalling and reaping child processes with posix_spawn.
public enum ChildProcess {
    /// Starts `executable` with `arguments`, stdout and stderr appended to `logPath`, in its own process group
    /// (so a terminal's Ctrl-C reaches only the supervisor, which then stops children in order).
    public static func spawn(
        executable: String,
        arguments: [String],
        environment: [String: String],
        logPath: String
    ) throws(SpawnError) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Signal handlers installed by this process (Dispatch sets SIGINT/SIGTERM/SIGPIPE to ignored)
        // would otherwise be inherited as "ignored" and make children deaf to SIGTERM.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP)
        )

        let argv = ([executable] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") }
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let terminatedArgv = argv + [nil]
        let terminatedEnvp = envp + [nil]
        let result = posix_spawn(&pid, executable, &actions, &attributes, terminatedArgv, terminatedEnvp)
        guard result == 0 else { throw SpawnError(executable: executable, code: result) }
        return pid
    }

    /// Waits for `pid` to exit and reaps it; `waitpid` blocks, so it runs on its own thread, not the cooperative pool.
    public static func waitForExit(_ pid: Int32) async -> ChildExit {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var status: Int32 = 0
                while true {
                    let result = waitpid(pid, &status, 0)
                    if result == pid { break }
                    if result < 0 && errno == EINTR { continue }
                    // Already reaped elsewhere or not our child: report it as gone.
                    continuation.resume(returning: .exited(-1))
                    return
                }
                continuation.resume(returning: ChildExit(waitStatus: status))
            }
        }
    }

    /// Sends `signal` to `pid`; false when the process no longer exists.
    @discardableResult
    public static func signal(_ pid: Int32, _ signal: Int32) -> Bool {
        kill(pid, signal) == 0
    }

    /// True while `pid` exists (a zombie counts until reaped).
    public static func isAlive(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }
}
