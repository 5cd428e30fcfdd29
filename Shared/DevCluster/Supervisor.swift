import KafkaTransport
import FloeService
import Foundation
import Logging

/// One process the supervisor keeps running.
public struct ServiceSpec: Sendable, Hashable {
    /// `controller`, `broker`, `wal-writer`, …
    public var kind: String
    public var nodeID: Int32
    public var zone: String
    /// Absolute path of the executable.
    public var executable: String
    public var arguments: [String]
    /// Its Kafka-framed listener.
    public var listen: KafkaEndpoint
    /// Its admin HTTP server.
    public var admin: KafkaEndpoint
    /// Variables added to the supervisor's own environment.
    public var environment: [String: String]

    public init(
        kind: String, nodeID: Int32, zone: String, executable: String, arguments: [String],
        listen: KafkaEndpoint, admin: KafkaEndpoint, environment: [String: String] = [:]
    ) {
        self.kind = kind
        self.nodeID = nodeID
        self.zone = zone
        self.executable = executable
        self.arguments = arguments
        self.listen = listen
        self.admin = admin
        self.environment = environment
    }

    /// `kind-nodeid`, unique within a cluster; also the log file's name.
    public var name: String { "\(kind)-\(nodeID)" }
}

/// Restart delays like Kubernetes' `restartPolicy: Always`: doubling from `initial` up to `maximum`, forgiven after `resetAfter` of uptime.
public struct RestartPolicy: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration
    public var resetAfter: Duration

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(10), resetAfter: Duration = .seconds(30)) {
        self.initial = initial
        self.maximum = maximum
        self.resetAfter = resetAfter
    }

    /// The delay before the next start after `failures` consecutive short-lived runs (1 = first failure).
    public func delay(afterFailures failures: Int) -> Duration {
        var delay = initial
        var step = 1
        while step < failures && delay < maximum {
            delay *= 2
            step += 1
        }
        return min(delay, maximum)
    }
}

/// Something that happened to a supervised child.
public enum SupervisorEvent: Sendable, Equatable {
    case started(name: String, pid: Int32)
    case exited(name: String, pid: Int32, status: ChildExit)
    case restartScheduled(name: String, delay: Duration, failures: Int)
    case spawnFailed(name: String, reason: String)
    case stopped(name: String)
    /// The child exited while its hold file exists; it is restarted once the file is removed.
    case held(name: String)
    /// ``Supervisor/stop(gracePeriod:)`` has begun: SIGTERM has been sent to every child.
    case stopping
    /// Every child has exited after ``Supervisor/stop(gracePeriod:)``.
    case allStopped
}

/// Runs a set of services as child processes, restarts them when they die and keeps `cluster.json` current.
public actor Supervisor {
    private struct Child {
        var spec: ServiceSpec
        var logPath: String
        var pid: Int32?
        var state = "starting"
        var restarts = 0
        var failures = 0
        var startedAt: ContinuousClock.Instant?
    }

    private var children: [Child]
    private var loops: [Task<Void, Never>] = []
    private var stopping = false
    /// Waiters for "none of these kinds running" (nil: any kind).
    private var idleWaiters: [(kinds: Set<String>?, continuation: CheckedContinuation<Void, Never>)] = []
    private var stoppedWaiters: [CheckedContinuation<Void, Never>] = []
    private var stopped = false
    private let dataDirectory: String
    private let policy: RestartPolicy
    private let logger: Logger
    private let baseEnvironment: [String: String]
    private let eventContinuation: AsyncStream<SupervisorEvent>.Continuation

    /// Everything that happens to children, in order; unbounded buffering would grow forever, so only the newest 10,000 are kept for slow readers.
    public nonisolated let events: AsyncStream<SupervisorEvent>

    /// Path of the cluster file this supervisor maintains.
    public nonisolated var clusterFilePath: String { dataDirectory + "/cluster.json" }

    /// Path of the file that, while it exists, keeps the child named `name` (`kind-nodeid`) from being
    /// restarted when it dies, so tests and benchmarks can take a service down for good and bring it back.
    public static func holdPath(dataDirectory: String, name: String) -> String {
        dataDirectory + "/hold/\(name)"
    }

    /// Path of a child's log file.
    public nonisolated func logPath(for spec: ServiceSpec) -> String {
        dataDirectory + "/logs/\(spec.name).log"
    }

    /// A supervisor for `specs`, writing logs and `cluster.json` under `dataDirectory`.
    public init(
        specs: [ServiceSpec],
        dataDirectory: String,
        policy: RestartPolicy = RestartPolicy(),
        environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger
    ) {
        self.dataDirectory = dataDirectory
        self.policy = policy
        self.logger = logger
        self.baseEnvironment = environment
        (events, eventContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        self.children = specs.map { Child(spec: $0, logPath: dataDirectory + "/logs/\($0.name).log") }
    }

    /// Creates the directories, starts every child and returns once each has been spawned (or failed to spawn).
    public func start() throws {
        guard loops.isEmpty, !stopping else { return }
        try FileManager.default.createDirectory(atPath: dataDirectory + "/logs", withIntermediateDirectories: true)
        writeClusterFile()
        for index in children.indices {
            spawn(index)
        }
        for index in children.indices {
            loops.append(Task { await self.supervise(index) })
        }
    }

    /// The current contents of `cluster.json`.
    public func snapshot() -> ClusterFile {
        let brokers = children.filter { $0.spec.kind == "broker" }.map { $0.spec.listen.description }
        return ClusterFile(
            bootstrap: brokers.joined(separator: ","),
            services: children.map {
                ClusterFile.Service(
                    kind: $0.spec.kind, nodeID: $0.spec.nodeID, zone: $0.spec.zone, pid: $0.pid,
                    listen: $0.spec.listen.description, admin: $0.spec.admin.description,
                    state: $0.state, restarts: $0.restarts, log: $0.logPath
                )
            }
        )
    }

    /// SIGTERM every child, SIGKILL those still alive after `gracePeriod`, wait for all to be reaped, mark them stopped.
    ///
    /// Controllers are stopped last, once the other services have drained (or the grace period
    /// passed): those deregister and commit their last uploads through the controllers.
    public func stop(gracePeriod: Duration = .seconds(15)) async {
        stopping = true
        // Children waiting out a backoff are not running; cancelling ends their loops.
        for loop in loops { loop.cancel() }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: gracePeriod)
        let others = Set(children.map(\.spec.kind)).subtracting(["controller"])
        signalAll(SIGTERM, kinds: others)
        eventContinuation.yield(.stopping)
        _ = await waitUntilNoneRunning(timeout: clock.now.duration(to: deadline), kinds: others)
        signalAll(SIGTERM)
        if !(await waitUntilNoneRunning(timeout: max(clock.now.duration(to: deadline), .seconds(1)))) {
            let survivors = children.compactMap { $0.pid.map { "\($0)" } }
            logger.warning("children still running after the grace period, sending SIGKILL", metadata: ["pids": "\(survivors.joined(separator: ","))"])
            signalAll(SIGKILL)
            _ = await waitUntilNoneRunning(timeout: .seconds(10))
        }
        for loop in loops { await loop.value }
        for index in children.indices {
            children[index].state = "stopped"
            children[index].pid = nil
        }
        writeClusterFile()
        stopped = true
        eventContinuation.yield(.allStopped)
        eventContinuation.finish()
        let waiters = stoppedWaiters
        stoppedWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once ``stop(gracePeriod:)`` has finished (at once if it already has).
    public func waitUntilStopped() async {
        if stopped { return }
        await withCheckedContinuation { stoppedWaiters.append($0) }
    }

    /// SIGKILL every running child at once (a second Ctrl-C); ``stop(gracePeriod:)`` then finishes quickly.
    public func killAll() {
        signalAll(SIGKILL)
    }

    /// Pids of the children that are running now.
    public func runningPids() -> [Int32] {
        children.compactMap(\.pid)
    }

    private func signalAll(_ signal: Int32, kinds: Set<String>? = nil) {
        for child in children where kinds?.contains(child.spec.kind) ?? true {
            if let pid = child.pid { ChildProcess.signal(pid, signal) }
        }
    }

    private func spawn(_ index: Int) {
        let spec = children[index].spec
        var environment = baseEnvironment
        environment.merge(spec.environment) { _, new in new }
        do {
            let pid = try ChildProcess.spawn(
                executable: spec.executable, arguments: spec.arguments, environment: environment,
                logPath: children[index].logPath
            )
            children[index].pid = pid
            children[index].state = "running"
            children[index].startedAt = .now
            logger.info("started \(spec.name)", metadata: ["pid": "\(pid)"])
            // The file is current before anyone hears of the new pid.
            writeClusterFile()
            eventContinuation.yield(.started(name: spec.name, pid: pid))
        } catch {
            children[index].pid = nil
            children[index].state = "restarting"
            children[index].startedAt = nil
            logger.error("cannot start \(spec.name): \(error)")
            writeClusterFile()
            eventContinuation.yield(.spawnFailed(name: spec.name, reason: error.description))
        }
    }

    private func supervise(_ index: Int) async {
        while !stopping {
            let name = children[index].spec.name
            if let pid = children[index].pid {
                let status = await ChildProcess.waitForExit(pid)
                let ranFor = children[index].startedAt.map { ContinuousClock.now - $0 } ?? .zero
                children[index].pid = nil
                children[index].state = stopping ? "stopped" : "restarting"
                writeClusterFile()
                eventContinuation.yield(.exited(name: name, pid: pid, status: status))
                if ranFor >= policy.resetAfter { children[index].failures = 0 }
                releaseIdleWaitersIfNoneRunning()
                if stopping {
                    logger.info("\(name) stopped: \(status)")
                    eventContinuation.yield(.stopped(name: name))
                    break
                }
                logger.warning("\(name) (pid \(pid)) \(status) after \(ranFor); restarting")
            }
            let hold = Self.holdPath(dataDirectory: dataDirectory, name: name)
            if FileManager.default.fileExists(atPath: hold) {
                children[index].state = "held"
                writeClusterFile()
                eventContinuation.yield(.held(name: name))
                logger.info("\(name) held down until \(hold) is removed")
                // Another process removes the file, so there is no event to wait on; stop() cancels the sleep.
                while !stopping, FileManager.default.fileExists(atPath: hold) {
                    do { try await Task.sleep(for: .milliseconds(50)) } catch { break }
                }
                if stopping || Task.isCancelled { break }
                // A deliberate hold is not a crash loop: restart at once.
                children[index].failures = 0
                children[index].restarts += 1
                logger.info("\(name) released; starting it")
                spawn(index)
                continue
            }
            children[index].failures += 1
            let delay = policy.delay(afterFailures: children[index].failures)
            eventContinuation.yield(.restartScheduled(name: name, delay: delay, failures: children[index].failures))
            do {
                try await Task.sleep(for: delay)
            } catch {
                break
            }
            if stopping { break }
            children[index].restarts += 1
            logger.info("restarting \(name) (restart \(children[index].restarts), after \(delay))")
            spawn(index)
        }
    }

    /// Waits until no child runs or `timeout` passes; returns whether none runs.
    private func waitUntilNoneRunning(timeout: Duration, kinds: Set<String>? = nil) async -> Bool {
        guard anyRunning(kinds) else { return true }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.releaseIdleWaiters()
        }
        await withCheckedContinuation { idleWaiters.append((kinds, $0)) }
        timer.cancel()
        return !anyRunning(kinds)
    }

    private func anyRunning(_ kinds: Set<String>?) -> Bool {
        children.contains { $0.pid != nil && (kinds?.contains($0.spec.kind) ?? true) }
    }

    private func releaseIdleWaitersIfNoneRunning() {
        let ready = idleWaiters.filter { !anyRunning($0.kinds) }
        guard !ready.isEmpty else { return }
        idleWaiters.removeAll { !anyRunning($0.kinds) }
        for waiter in ready { waiter.continuation.resume() }
    }

    private func releaseIdleWaiters() {
        let waiters = idleWaiters
        idleWaiters.removeAll()
        for waiter in waiters { waiter.continuation.resume() }
    }

    private func writeClusterFile() {
        do {
            try snapshot().write(to: clusterFilePath)
        } catch {
            logger.error("cannot write \(clusterFilePath): \(error)")
        }
    }
}
