import ClusterMetadata
@testable import ControllerCore
import KafkaTransport
import Raft
import TestKit
import Testing

/// A controller node on a `ManualClock`, with no server and no ticker: the test ticks it the way
/// `ControllerService`'s ticker does, after moving the clock. Storage is real SQLite, so commits still
/// take real (short) time, but every deadline passes only when the test says so.
struct ClockedController {
    let clock: ManualClock
    let node: ControllerNode
    let directory: String

    /// A started node with id 1, the only voter unless `peers` others are listed (at ports no one listens on).
    static func start(peers: Int = 0, sessionTimeout: Duration = .seconds(6)) async throws -> ClockedController {
        let ports = try freePorts(1 + peers)
        let voters = ports.enumerated().map {
            ControllerVoter(id: Int32($0.offset + 1), endpoint: KafkaEndpoint(host: "127.0.0.1", port: $0.element))
        }
        let directory = try temporaryDirectory("clocked")
        let clock = ManualClock()
        let configuration = testConfiguration(
            id: 1, voters: voters, port: ports[0], directory: directory, sessionTimeout: sessionTimeout)
        do {
            let node = try await ControllerNode(configuration: configuration, logger: testLogger, clock: clock)
            await node.start()
            return ClockedController(clock: clock, node: node, directory: directory)
        } catch {
            removeDirectory(directory)
            throw error
        }
    }

    /// Moves the clock `duration` forward in steps of at most `step`, ticking the node after each.
    func run(for duration: Duration, step: Duration) async {
        var left = duration
        while left > .zero {
            let moved = min(step, left)
            clock.advance(by: moved)
            left -= moved
            await node.tick()
        }
    }

    /// How long until the node's next Raft timer (for a follower, its election deadline), as the ticker reads it.
    func untilNextTimer() async -> Duration {
        await node.nextTickDelay(minimum: .zero, maximum: .seconds(3600))
    }

    /// Waits for the node to lead once an election has started; nothing moves the clock meanwhile, so this waits
    /// for storage, not time. False at once while the node still follows: no event would end the wait.
    func waitUntilLeading() async -> Bool {
        guard await node.currentStatus.role != RaftRole.follower.rawValue else { return false }
        return await node.waitForStatus(timeout: .seconds(1)) { $0.role == RaftRole.leader.rawValue }
    }

    func stop() async {
        await node.stop()
        removeDirectory(directory)
    }
}

extension ProposalOutcome {
    var isTimedOut: Bool {
        if case .timedOut = self { return true }
        return false
    }

    var isNotLeader: Bool {
        if case .notLeader = self { return true }
        return false
    }

    /// The applied result, or nil when the proposal did not apply.
    var applied: MetadataResult? {
        if case let .applied(result, _) = self { return result }
        return nil
    }
}

/// Time-driven behaviour of a whole `ControllerNode` in simulated time: elections, broker session
/// timeouts and proposal timeouts, each checked on both sides of its deadline. The time limits only
/// flag a hang (a waited-for event that never comes); no test sleeps or waits for real time to pass.
@Suite struct SimulatedTimeTests {
    @Test(.timeLimit(.minutes(1)))
    func aSingleVoterElectsItselfOnlyOnceItsElectionTimeoutHasPassed() async throws {
        let controller = try await ClockedController.start()
        try await withCleanup {
            let node = controller.node
            let untilElection = await controller.untilNextTimer()
            #expect(untilElection >= node.configuration.electionTimeoutMin)
            #expect(untilElection <= node.configuration.electionTimeoutMax)

            await controller.run(for: untilElection - .milliseconds(1), step: .milliseconds(10))
            let before = await node.currentStatus
            #expect(before.role == RaftRole.follower.rawValue)
            #expect(before.term == 0)
            #expect(await node.propose(.createTopics([topic("early")]), timeout: .seconds(5)).isNotLeader)

            await controller.run(for: .milliseconds(1), step: .milliseconds(1))
            try #require(await controller.waitUntilLeading())
            let after = await node.currentStatus
            #expect(after.term == 1)
            #expect(after.leaderId == 1)
            #expect(controller.clock.now == untilElection)

            let outcome = await node.propose(.createTopics([topic("late")]), timeout: .seconds(5))
            #expect(outcome.applied?.errorCode == 0)
            #expect(await node.metadata.topics["late"] != nil)
            #expect(await node.metadata.topics["early"] == nil)
        } cleanup: {
            await controller.stop()
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aHeartbeatingBrokerKeepsItsSessionAndASilentOneIsFencedOnceItsTimeoutPasses() async throws {
        let sessionTimeout = Duration.seconds(2)
        let controller = try await ClockedController.start(sessionTimeout: sessionTimeout)
        try await withCleanup {
            let node = controller.node
            await controller.run(for: await controller.untilNextTimer(), step: .milliseconds(10))
            try #require(await controller.waitUntilLeading())
            let registration = NodeRegistration(id: 7, kind: .broker, zone: "a", listener: "127.0.0.1:9007", admin: "127.0.0.1:9507")
            guard case let .nodeRegistered(incarnation)? = await node.propose(.registerNode(registration), timeout: .seconds(5)).applied else {
                Issue.record("registration did not apply")
                return
            }
            await node.sessionStarted(nodeId: 7)
            let check = await node.sessions.checkInterval

            // Five session timeouts' worth of time, a heartbeat every quarter timeout: no fence is even proposed.
            let logBefore = await node.currentStatus.lastLogIndex
            for _ in 0..<20 {
                await controller.run(for: sessionTimeout / 4, step: check)
                let answer = await node.heartbeat(nodeId: 7, incarnation: incarnation)
                #expect(answer.errorCode == 0)
                #expect(!answer.fenced)
            }
            #expect(await node.currentStatus.lastLogIndex == logBefore)
            #expect(await node.metadata.nodes[7]?.state == .active)

            // Silent from here. One check before the timeout the session still holds.
            await controller.run(for: sessionTimeout - check, step: check)
            #expect(await node.currentStatus.lastLogIndex == logBefore)
            #expect(await node.sessions.proposalInFlight(for: 7) == nil)

            // Two checks later the timeout has passed: the fence is proposed, and applies without the clock moving.
            await controller.run(for: check * 2, step: check)
            try #require(await node.currentStatus.lastLogIndex == logBefore + 1)
            _ = await node.fetchMetadata(fromVersion: logBefore, maxWait: .seconds(60), maxEntries: 10)
            #expect(await node.metadata.nodes[7]?.state == .fenced)
            #expect(await node.heartbeat(nodeId: 7, incarnation: incarnation).fenced)
        } cleanup: {
            await controller.stop()
        }
    }

    /// A leader whose two followers never answer cannot commit; the proposal's timer, on the manual
    /// clock, is what ends it. (With no leader at all a proposal is refused at once, never timed out.)
    @Test(.timeLimit(.minutes(1)))
    func aProposalTheLeaderCannotCommitTimesOutWhenItsTimeoutPassesOnTheClock() async throws {
        let controller = try await ClockedController.start(peers: 2)
        try await withCleanup {
            let node = controller.node
            await controller.run(for: await controller.untilNextTimer(), step: .milliseconds(10))
            #expect(await node.currentStatus.role == RaftRole.preCandidate.rawValue)
            // Voter 2's (pre-)votes, handed over as its messages would be; its endpoint has no one listening.
            await node.receive(RaftEnvelope(from: 2, to: 1, message: .voteResponse(RaftVoteResponse(term: 1, granted: true, isPreVote: true))))
            await node.receive(RaftEnvelope(from: 2, to: 1, message: .voteResponse(RaftVoteResponse(term: 1, granted: true, isPreVote: false))))
            try #require(await controller.waitUntilLeading())

            // Shorter than the election timeout, so the leader's quorum check cannot end it first.
            let timeout = Duration.milliseconds(200)
            let timersBefore = controller.clock.pendingCount
            let proposal = Task { await node.propose(.createTopics([topic("unreplicated")]), timeout: timeout) }
            await controller.clock.waitForPending(timersBefore + 1)

            await controller.run(for: timeout - .milliseconds(10), step: .milliseconds(10))
            #expect(controller.clock.pendingCount == timersBefore + 1, "the proposal ended before its timeout")
            let status = await node.currentStatus
            #expect(status.role == RaftRole.leader.rawValue)
            #expect(status.commitIndex < status.lastLogIndex)

            await controller.run(for: .milliseconds(10), step: .milliseconds(10))
            #expect(await proposal.value.isTimedOut)
            #expect(await node.metadata.topics["unreplicated"] == nil)
        } cleanup: {
            await controller.stop()
        }
    }
}
