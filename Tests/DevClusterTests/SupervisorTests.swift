import KafkaTransport
import DevCluster
import FloeService
import Foundation
import Logging
import TestKit
import Testing

/// Collects supervisor events and lets a test await a condition on them, bounded in time.
actor EventRecorder {
    private(set) var events: [SupervisorEvent] = []
    private var waiters: [(id: Int, predicate: @Sendable ([SupervisorEvent]) -> Bool, continuation: CheckedContinuation<Bool, Never>)] = []
    private var nextID = 0

    init(_ stream: AsyncStream<SupervisorEvent>) {
        Task { [weak self] in
            for await event in stream { await self?.record(event) }
        }
    }

    private func record(_ event: SupervisorEvent) {
        events.append(event)
        let current = events
        let (ready, pending) = (waiters.filter { $0.predicate(current) }, waiters.filter { !$0.predicate(current) })
        waiters = pending
        for waiter in ready { waiter.continuation.resume(returning: true) }
    }

    /// True once `predicate` holds for the events seen so far; false after `timeout`.
    func wait(timeout: Duration = .seconds(30), until predicate: @escaping @Sendable ([SupervisorEvent]) -> Bool) async -> Bool {
        if predicate(events) { return true }
        let id = nextID
        nextID += 1
        let timer = Task { [weak self] in
            // The waiter's deadline: this sleep bounds the wait, the event is the continuation.
            try? await Task.sleep(for: timeout)
            await self?.expire(id)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { waiters.append((id, predicate, $0)) }
    }

    private func expire(_ id: Int) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(returning: false)
    }
}

func startedPids(_ events: [SupervisorEvent], _ name: String) -> [Int32] {
    events.compactMap { if case .started(name, let pid) = $0 { pid } else { nil } }
}

/// Polls a child's log (another process writes it, so there is no event) every 10 ms for at most 20 s.
func logContains(_ path: String, _ condition: (String) -> Bool) async -> Bool {
    await waitUntil(timeout: .seconds(20)) { (try? String(contentsOfFile: path, encoding: .utf8)).map(condition) ?? false }
}

func shell(_ kind: String, _ id: Int32, _ script: String) -> ServiceSpec {
    ServiceSpec(
        kind: kind, nodeID: id, zone: "z", executable: "/bin/sh", arguments: ["-c", script],
        listen: KafkaEndpoint(host: "127.0.0.1", port: 9000 + Int(id)), admin: KafkaEndpoint(host: "127.0.0.1", port: 9500 + Int(id))
    )
}

@Suite struct SupervisorTests {
    let logger = Logger(label: "test.supervisor")

    @Test func restartPolicyDoublesUpToTheCap() {
        let policy = RestartPolicy(initial: .milliseconds(100), maximum: .seconds(10), resetAfter: .seconds(30))
        #expect(policy.delay(afterFailures: 1) == .milliseconds(100))
        #expect(policy.delay(afterFailures: 2) == .milliseconds(200))
        #expect(policy.delay(afterFailures: 5) == .milliseconds(1600))
        #expect(policy.delay(afterFailures: 8) == .seconds(10))
        #expect(policy.delay(afterFailures: 1000) == .seconds(10))
    }

    @Test func killedChildIsRestartedWithANewPidAndClusterFileFollows() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spec = shell("controller", 1, "echo started; exec sleep 600")
        let supervisor = Supervisor(
            specs: [spec, shell("broker", 101, "exec sleep 600")], dataDirectory: directory,
            policy: RestartPolicy(initial: .milliseconds(20)), logger: logger
        )
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()

        let first = try ClusterFile.read(from: supervisor.clusterFilePath)
        #expect(first.bootstrap == "127.0.0.1:9101")
        let firstPid = try #require(first.services.first { $0.kind == "controller" }?.pid)
        #expect(ChildProcess.isAlive(firstPid))

        #expect(ChildProcess.signal(firstPid, SIGKILL))
        let restarted = await recorder.wait { startedPids($0, spec.name).count >= 2 }
        #expect(restarted)
        let pids = startedPids(await recorder.events, spec.name)
        #expect(pids.count == 2 && pids[0] == firstPid && pids[1] != firstPid)

        let second = try ClusterFile.read(from: supervisor.clusterFilePath)
        let entry = try #require(second.services.first { $0.kind == "controller" })
        #expect(entry.pid == pids.last)
        #expect(entry.restarts == 1)
        #expect(entry.state == "running")
        #expect(entry.nodeID == 1 && entry.listen == "127.0.0.1:9001" && entry.admin == "127.0.0.1:9501")
        let exits = await recorder.events.filter { if case .exited(spec.name, firstPid, .signalled(SIGKILL)) = $0 { true } else { false } }
        #expect(exits.count == 1)

        // Both runs append to the same log; the second may still be starting, so wait for its line before stopping it.
        let bothLogged = await logContains(supervisor.logPath(for: spec)) { $0.components(separatedBy: "started\n").count - 1 == 2 }
        #expect(bothLogged)
        await supervisor.stop(gracePeriod: .seconds(5))
    }

    @Test(.timeLimit(.minutes(1))) func aHeldChildStaysDownUntilItsHoldFileIsRemoved() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spec = shell("broker", 101, "exec sleep 600")
        let supervisor = Supervisor(specs: [spec], dataDirectory: directory, policy: RestartPolicy(initial: .milliseconds(10)), logger: logger)
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()
        let firstPid = try #require(try ClusterFile.read(from: supervisor.clusterFilePath).services.first?.pid)

        let hold = Supervisor.holdPath(dataDirectory: directory, name: spec.name)
        try FileManager.default.createDirectory(atPath: directory + "/hold", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: hold, contents: nil))
        #expect(ChildProcess.signal(firstPid, SIGKILL))
        #expect(await recorder.wait { $0.contains(.held(name: spec.name)) })
        let held = try #require(try ClusterFile.read(from: supervisor.clusterFilePath).services.first)
        #expect(held.state == "held" && held.pid == nil && held.restarts == 0)
        // Far longer than the 10 ms restart delay: still no second start.
        #expect(await recorder.wait(timeout: .milliseconds(500)) { startedPids($0, spec.name).count >= 2 } == false)

        try FileManager.default.removeItem(atPath: hold)
        #expect(await recorder.wait { startedPids($0, spec.name).count >= 2 })
        let running = try #require(try ClusterFile.read(from: supervisor.clusterFilePath).services.first)
        #expect(running.state == "running" && running.restarts == 1 && running.pid != nil && running.pid != firstPid)
        await supervisor.stop(gracePeriod: .seconds(5))
    }

    @Test(.timeLimit(.minutes(1))) func stopEndsAHold() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spec = shell("broker", 102, "exec sleep 600")
        let supervisor = Supervisor(specs: [spec], dataDirectory: directory, policy: RestartPolicy(initial: .milliseconds(10)), logger: logger)
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()
        let pid = try #require(try ClusterFile.read(from: supervisor.clusterFilePath).services.first?.pid)
        try FileManager.default.createDirectory(atPath: directory + "/hold", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: Supervisor.holdPath(dataDirectory: directory, name: spec.name), contents: nil))
        #expect(ChildProcess.signal(pid, SIGKILL))
        #expect(await recorder.wait { $0.contains(.held(name: spec.name)) })
        await supervisor.stop(gracePeriod: .seconds(5))
        #expect(try ClusterFile.read(from: supervisor.clusterFilePath).services.first?.state == "stopped")
    }

    @Test func backoffGrowsForAChildThatExitsImmediately() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spec = shell("wal-writer", 11, "echo failing >&2; exit 3")
        let supervisor = Supervisor(
            specs: [spec], dataDirectory: directory,
            policy: RestartPolicy(initial: .milliseconds(10), maximum: .milliseconds(80)), logger: logger
        )
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()
        let enough = await recorder.wait {
            $0.filter { if case .restartScheduled = $0 { true } else { false } }.count >= 6
        }
        #expect(enough)
        await supervisor.stop(gracePeriod: .seconds(5))
        let events = await recorder.events
        let delays = events.compactMap { if case .restartScheduled(_, let delay, _) = $0 { delay } else { nil } }
        #expect(Array(delays.prefix(6)) == [.milliseconds(10), .milliseconds(20), .milliseconds(40), .milliseconds(80), .milliseconds(80), .milliseconds(80)])
        #expect(events.contains { if case .exited(_, _, .exited(3)) = $0 { true } else { false } })
        let log = try String(contentsOfFile: supervisor.logPath(for: spec), encoding: .utf8)
        #expect(log.contains("failing"))
    }

    @Test func stopTerminatesEveryChildEvenOneIgnoringSIGTERM() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let stubborn = shell("broker", 102, "trap '' TERM; echo ready; while true; do sleep 0.05; done")
        let supervisor = Supervisor(
            specs: [shell("controller", 1, "exec sleep 600"), shell("controller", 2, "exec sleep 600"), stubborn],
            dataDirectory: directory, logger: logger
        )
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()
        let pids = await supervisor.runningPids()
        #expect(pids.count == 3)
        // The trap must be installed before SIGTERM is sent, or the test would not need SIGKILL.
        let trapped = await logContains(supervisor.logPath(for: stubborn)) { $0.contains("ready") }
        #expect(trapped)

        let clock = ContinuousClock()
        let elapsed = await clock.measure { await supervisor.stop(gracePeriod: .milliseconds(300)) }
        #expect(elapsed >= .milliseconds(300))
        for pid in pids { #expect(!ChildProcess.isAlive(pid)) }
        #expect(await supervisor.runningPids().isEmpty)
        let file = try ClusterFile.read(from: supervisor.clusterFilePath)
        #expect(file.services.allSatisfy { $0.pid == nil && $0.state == "stopped" })
        #expect(await recorder.wait { $0.last == .allStopped })
        let events = await recorder.events
        #expect(events.contains { if case .exited(stubborn.name, _, .signalled(SIGKILL)) = $0 { true } else { false } })
        #expect(events.contains { if case .exited("controller-1", _, .signalled(SIGTERM)) = $0 { true } else { false } })
        // No restart after stop.
        #expect(startedPids(events, "controller-1").count == 1)
    }

    @Test func missingExecutableIsReportedAndRetriedWithoutCrashing() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var spec = shell("broker", 101, "")
        spec.executable = directory + "/does-not-exist"
        let supervisor = Supervisor(specs: [spec], dataDirectory: directory, policy: RestartPolicy(initial: .milliseconds(5)), logger: logger)
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()
        let retried = await recorder.wait { $0.filter { if case .spawnFailed = $0 { true } else { false } }.count >= 2 }
        #expect(retried)
        await supervisor.stop(gracePeriod: .seconds(1))
        let file = try ClusterFile.read(from: supervisor.clusterFilePath)
        #expect(file.services.first?.pid == nil)
    }

    @Test func backoffIsForgivenAfterAChildRanLongEnough() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Each run outlives resetAfter, so every restart counts as the first failure again.
        let spec = shell("broker", 103, "sleep 0.15; exit 1")
        let supervisor = Supervisor(
            specs: [spec], dataDirectory: directory,
            policy: RestartPolicy(initial: .milliseconds(10), maximum: .seconds(5), resetAfter: .milliseconds(100)), logger: logger
        )
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()
        let enough = await recorder.wait {
            $0.filter { if case .restartScheduled = $0 { true } else { false } }.count >= 3
        }
        #expect(enough)
        await supervisor.stop(gracePeriod: .seconds(5))
        let failures = await recorder.events.compactMap { if case .restartScheduled(_, _, let failures) = $0 { failures } else { nil } }
        #expect(Array(failures.prefix(3)) == [1, 1, 1])
    }

    @Test func killAllCutsAGracefulStopShort() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let stubborn = shell("controller", 5, "trap '' TERM; echo ready; while true; do sleep 0.05; done")
        let supervisor = Supervisor(specs: [stubborn], dataDirectory: directory, logger: logger)
        let recorder = EventRecorder(supervisor.events)
        try await supervisor.start()
        let trapped = await logContains(supervisor.logPath(for: stubborn)) { $0.contains("ready") }
        #expect(trapped)
        let pids = await supervisor.runningPids()
        let clock = ContinuousClock()
        let started = clock.now
        // A 60 s grace period that killAll (the second Ctrl-C) must cut short.
        let stopping = Task { await supervisor.stop(gracePeriod: .seconds(60)) }
        #expect(await recorder.wait { $0.contains(.stopping) })
        await supervisor.killAll()
        await stopping.value
        #expect(clock.now - started < .seconds(30))
        for pid in pids { #expect(!ChildProcess.isAlive(pid)) }
    }

    @Test func survivorsAreFoundOnlyForLiveMatchingExecutables() async throws {
        let directory = try temporaryDirectory("dev-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sleeper = ServiceSpec(
            kind: "controller", nodeID: 1, zone: "z", executable: "/bin/sleep", arguments: ["600"],
            listen: KafkaEndpoint(host: "127.0.0.1", port: 1), admin: KafkaEndpoint(host: "127.0.0.1", port: 2)
        )
        let supervisor = Supervisor(specs: [sleeper], dataDirectory: directory, logger: logger)
        try await supervisor.start()
        let file = try ClusterFile.read(from: supervisor.clusterFilePath)
        #expect(file.survivors(amongExecutables: ["/bin/sleep"]).map(\.nodeID) == [1])
        #expect(file.survivors(amongExecutables: ["/bin/true"]).isEmpty)
        await supervisor.stop(gracePeriod: .seconds(5))
        #expect(file.survivors(amongExecutables: ["/bin/sleep"]).isEmpty)
    }
}
