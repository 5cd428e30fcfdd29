import ControllerClient
import DevCluster
import FloeService
import Foundation
import KafkaTransport
import TestKit
import Testing

/// A real producer (confluent-kafka, acks=all, retries) keeps writing while a process under its
/// partition fails; every acknowledged record must then be readable, at the offset its
/// acknowledgement named, and still after the whole cluster is stopped and started again.
/// Without idempotence retries may store a record twice or out of order (both reported); with it,
/// exactly once and in produce order.
@Suite(.serialized) struct FailoverTests {
    /// How the partition's leader fails.
    enum Fault: String, CustomStringConvertible, Sendable, CaseIterable {
        /// SIGKILL; floe dev restarts the broker at once, so it may well lead again.
        case kill
        /// SIGSTOP until the controller's session timeout moves the partition to the other broker,
        /// then SIGKILL (floe dev restarts it): the partition really changes hands under the producer.
        case freezeUntilMovedThenKill
        /// SIGKILL while floe dev holds the broker down: the controller must notice the closed connection
        /// and fence the broker on that path (its close-fence counter says so), before its session times out.
        case killAndKeepDown
        /// SIGKILL the broker coordinating the consumer group that follows the partition (it may lead
        /// the partition too); the group must move to the other broker and keep its offsets.
        case killGroupCoordinator
        /// SIGKILL the zone's WAL writer, which holds every unuploaded acknowledged record; floe dev
        /// restarts it on its volume and it must replay them.
        case killWALWriter
        var description: String { rawValue }
    }

    /// One fault under one kind of producer.
    struct Scenario: CustomStringConvertible, Sendable {
        var fault: Fault
        var idempotent: Bool
        var description: String { "\(fault)\(idempotent ? ", idempotent producer" : "")" }
    }

    static let scenarios: [Scenario] = [
        Scenario(fault: .kill, idempotent: false),
        Scenario(fault: .kill, idempotent: true),
        Scenario(fault: .freezeUntilMovedThenKill, idempotent: false),
        Scenario(fault: .freezeUntilMovedThenKill, idempotent: true),
        Scenario(fault: .killAndKeepDown, idempotent: true),
        Scenario(fault: .killWALWriter, idempotent: true),
        Scenario(fault: .killGroupCoordinator, idempotent: true),
    ]

    /// The last line of a script's output that is a node id.
    static func nodeID(in output: String) -> Int32? {
        output.split(separator: "\n").compactMap { Int32($0) }.last
    }

    /// The last JSON summary line a script printed.
    static func summary(in output: String) -> String {
        output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? "(no summary)"
    }

    /// Lines of the producer's acknowledgement file ("number offset" per acknowledged record).
    static func acknowledgedCount(_ path: String) -> Int {
        guard let data = FileManager.default.contents(atPath: path) else { return 0 }
        return data.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
    }

    /// A counter from the (single) controller's metrics page.
    static func controllerCounter(_ name: String, _ cluster: DevClusterProcess) async throws -> Double {
        let controller = try #require(cluster.clusterFile?.services.first { $0.kind == "controller" }, "a controller in cluster.json")
        let page = try await AdminClient.get(try parseEndpoint(controller.admin), path: "/metrics").text
        let line = page.split(separator: "\n").first { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
        // A counter that was never incremented may not be exported yet.
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? 0
    }

    static func waitForAcknowledged(_ path: String, atLeast count: Int, within limit: Duration, producer: ClientScripts.RunningScript) async throws {
        // The producer is another process appending to a file: poll it. A producer that died early cannot
        // catch up; report it instead of waiting out the limit.
        _ = await waitUntil(timeout: limit, every: .milliseconds(50)) { acknowledgedCount(path) >= count || !producer.process.isRunning }
        if acknowledgedCount(path) >= count { return }
        throw ClusterTestFailure(description: "\(acknowledgedCount(path)) records acknowledged, waited for \(count) within \(limit)")
    }

    func script(_ arguments: [String], timeout: Duration = .seconds(120)) async throws -> ClientScripts.Outcome {
        try await ClientScripts.run("failover.py", arguments, timeout: timeout)
    }

    @Test(.timeLimit(.minutes(6)), arguments: scenarios)
    func processFailingUnderProduceLosesNoAcknowledgedRecord(_ scenario: Scenario) async throws {
        let cluster = try DevClusterProcess.make(brokersPerZone: 2, name: "failover")
        defer { cluster.tearDown() }
        do {
            try await run(scenario, on: cluster)
        } catch {
            Issue.record("\(error) \(cluster.keepForInspection())")
        }
    }

    func run(_ scenario: Scenario, on cluster: DevClusterProcess) async throws {
        let fault = scenario.fault
        try cluster.start()
        try await cluster.waitUntilReady("floe dev with two brokers")
        let topic = "failover-\(UInt32.random(in: 0...UInt32.max))"
        let common = ["--bootstrap", cluster.bootstrap, "--topic", topic]

        let created = try await script(["create"] + common)
        try #require(created.status == 0, "create \(topic): \(created)")
        let leaderAnswer = try await script(["leader"] + common)
        try #require(leaderAnswer.status == 0, "leader of \(topic)-0: \(leaderAnswer)")
        let leader = try #require(Self.nodeID(in: leaderAnswer.output), "leader output: \(leaderAnswer)")
        let victim = try #require(cluster.clusterFile?.services.first { $0.kind == "broker" && $0.nodeID == leader }, "broker \(leader) in cluster.json")
        let victimPid = try #require(victim.pid)

        let acked = cluster.dataDirectory + "/acked.txt"
        let stopFile = cluster.dataDirectory + "/stop-producing"
        let idempotence = scenario.idempotent ? ["--idempotent"] : []
        let producer = try ClientScripts.start("failover.py", ["produce"] + common + idempotence + ["--acked", acked, "--stop-file", stopFile])
        let followedFile = cluster.dataDirectory + "/followed.txt"
        // The follower stops only once the producer has exited, so the end it reads is final.
        let followerStopFile = cluster.dataDirectory + "/stop-following"
        let follower = try ClientScripts.start("failover.py", ["follow"] + common + ["--followed", followedFile, "--stop-file", followerStopFile])
        // A consumer group member rides along: its coordinator may be on the failing broker.
        let groupFollowedFile = cluster.dataDirectory + "/group-followed.txt"
        let member = try ClientScripts.start(
            "failover.py", ["group-follow"] + common + ["--followed", groupFollowedFile, "--stop-file", followerStopFile])
        var producerStopped = false
        defer {
            if !producerStopped {
                producer.cancel()
                follower.cancel()
                member.cancel()
            }
        }
        try await Self.waitForAcknowledged(acked, atLeast: 300, within: .seconds(60), producer: producer)

        // The partition's leader fails; the producer must keep getting acknowledgements.
        let atKill = Self.acknowledgedCount(acked)
        var movedTo: Int32?
        var killed = (node: leader, pid: victimPid)
        let hold = Supervisor.holdPath(dataDirectory: cluster.dataDirectory, name: "broker-\(leader)")
        switch fault {
        case .kill:
            #expect(kill(victimPid, SIGKILL) == 0)
        case .killAndKeepDown:
            try FileManager.default.createDirectory(atPath: cluster.dataDirectory + "/hold", withIntermediateDirectories: true)
            try #require(FileManager.default.createFile(atPath: hold, contents: nil))
            let closeFencesBefore = try await Self.controllerCounter("floe_controller_session_close_fences_total", cluster)
            let killedAt = ContinuousClock.now
            #expect(kill(victimPid, SIGKILL) == 0)
            let moved = try await script(["leader"] + common + ["--not", "\(leader)", "--wait", "60"], timeout: .seconds(90))
            let took = ContinuousClock.now - killedAt
            movedTo = Self.nodeID(in: moved.output)
            #expect(moved.status == 0 && movedTo != nil && movedTo != leader, "partition leadership after killing broker \(leader): \(moved)")
            // Fenced because its heartbeat connection closed, not because its session ran out.
            let closeFences = try await Self.controllerCounter("floe_controller_session_close_fences_total", cluster)
            #expect(closeFences == closeFencesBefore + 1, "close fences \(closeFencesBefore) → \(closeFences): broker \(leader) was not fenced when its connection closed")
            print("fail-over (\(scenario)): broker \(leader) killed and kept down; leadership at \(movedTo.map { "\($0)" } ?? "?") after \(took) (including the script's start)")
        case .killGroupCoordinator:
            let answer = try await script(["coordinator"] + common + ["--wait", "60"], timeout: .seconds(90))
            let node = try #require(Self.nodeID(in: answer.output), "coordinator of the group: \(answer)")
            let coordinator = try #require(cluster.clusterFile?.services.first { $0.kind == "broker" && $0.nodeID == node }, "broker \(node) in cluster.json")
            killed = (node, try #require(coordinator.pid))
            #expect(kill(killed.pid, SIGKILL) == 0)
        case .killWALWriter:
            let writer = try #require(cluster.clusterFile?.services.first { $0.kind == "wal-writer" }, "a WAL writer in cluster.json")
            killed = (writer.nodeID, try #require(writer.pid))
            #expect(kill(killed.pid, SIGKILL) == 0)
        case .freezeUntilMovedThenKill:
            #expect(kill(victimPid, SIGSTOP) == 0)
            let moved = try await script(["leader"] + common + ["--not", "\(leader)", "--wait", "60"], timeout: .seconds(90))
            movedTo = Self.nodeID(in: moved.output)
            #expect(moved.status == 0 && movedTo != nil && movedTo != leader, "partition leadership after freezing broker \(leader): \(moved)")
            #expect(kill(victimPid, SIGKILL) == 0)
        }
        try await Self.waitForAcknowledged(acked, atLeast: atKill + 300, within: .seconds(90), producer: producer)
        if fault == .killAndKeepDown {
            // Those acknowledgements came while the killed broker stayed dead; now let floe dev restart it.
            let state = cluster.clusterFile?.services.first { $0.kind == "broker" && $0.nodeID == leader }?.state
            #expect(state == "held", "broker \(leader) should still be held down, is \(state ?? "missing")")
            try FileManager.default.removeItem(atPath: hold)
        }
        let afterKill = try await script(["leader"] + common)
        let newLeader = Self.nodeID(in: afterKill.output).map { "\($0)" } ?? "?"
        let killedNode = killed.node, killedPid = killed.pid
        let restarted = try await cluster.waitUntilReady("node \(killedNode) restarted by floe dev") { services in
            services.contains { $0.nodeID == killedNode && $0.pid != killedPid && $0.restarts >= 1 }
        }
        #expect(restarted.contains { $0.nodeID == killed.node && $0.pid != killed.pid })

        _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
        let produced = await producer.wait(timeout: .seconds(150))
        _ = FileManager.default.createFile(atPath: followerStopFile, contents: nil)
        let followed = await follower.wait(timeout: .seconds(90))
        let grouped = await member.wait(timeout: .seconds(150))
        producerStopped = true
        if produced.status != 0 || produced.timedOut || followed.status != 0 || followed.timedOut || grouped.status != 0 || grouped.timedOut {
            _ = cluster.keepForInspection()
        }
        #expect(produced.status == 0 && !produced.timedOut, "producer: \(produced) \(cluster.dataDirectory)")
        #expect(followed.status == 0 && !followed.timedOut, "follower: \(followed) \(cluster.dataDirectory)")
        #expect(grouped.status == 0 && !grouped.timedOut, "group member: \(grouped) \(cluster.dataDirectory)")
        let total = Self.acknowledgedCount(acked)
        #expect(total > atKill + 300)

        let exactlyOnce = scenario.idempotent ? ["--exactly-once"] : []
        let verified = try await script(
            ["verify"] + common + exactlyOnce + ["--acked", acked, "--followed", followedFile, "--group-followed", groupFollowedFile])
        #expect(verified.status == 0, "verify after the kill: \(verified)\n--- floe dev ---\n\(cluster.logTail())\n\(verified.status == 0 ? "" : cluster.keepForInspection())")
        print("fail-over (\(scenario)): node \(killed.node) (pid \(killed.pid)) failed (fault began after \(atKill) acknowledgements); moved to \(movedTo.map { "\($0)" } ?? "-"), "
            + "leader at the end \(newLeader); \(total) acknowledged in all; producer \(Self.summary(in: produced.output)); "
            + "follower \(Self.summary(in: followed.output)); group member \(Self.summary(in: grouped.output)); verify \(Self.summary(in: verified.output))")

        // Stop the whole cluster (SIGTERM to floe dev), start it again on the same data directory.
        #expect(cluster.stop() == 0, "floe dev exit status after SIGTERM\n\(cluster.logTail())")
        try cluster.start()
        try await cluster.waitUntilReady("floe dev restarted on its data directory")
        let reread = try await script(["verify"] + common + exactlyOnce + ["--acked", acked])
        #expect(reread.status == 0, "verify after restarting the cluster: \(reread)\n--- floe dev ---\n\(cluster.logTail())\n\(reread.status == 0 ? "" : cluster.keepForInspection())")
        print("fail-over (\(scenario)) after a full restart: verify \(Self.summary(in: reread.output))")
    }
}
