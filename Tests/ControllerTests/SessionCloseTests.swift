import ClusterMetadata
import ControllerClient
@testable import ControllerCore
import KafkaTransport
import TestKit
import Testing

/// The leader cuts a session short when the connection of the node's latest heartbeat closes, unless the
/// node heartbeats again within the close grace. The session timeout here is far longer than any wait in
/// these tests, so a fence can only come from the close path.
@Suite(.serialized) struct SessionCloseTests {
    static let sessionTimeout = Duration.seconds(30)
    static let grace = Duration.milliseconds(1000)

    static func registration(_ id: NodeID) -> NodeRegistration {
        NodeRegistration(id: id, kind: .broker, zone: "a", listener: "127.0.0.1:\(9000 + Int(id))", admin: "127.0.0.1:\(9500 + Int(id))")
    }

    /// A one-controller cluster with the long session timeout and the short close grace, and its leader.
    static func startLeader() async throws -> (InProcessCluster, Int, ControllerNode) {
        let cluster = try InProcessCluster(count: 1, sessionTimeout: sessionTimeout)
        cluster.configure = { $0.sessionCloseGrace = grace }
        do {
            try await cluster.startAll()
            let leader = try #require(await cluster.leader())
            return (cluster, leader, try #require(cluster.services[leader]?.node))
        } catch {
            cluster.cleanup()
            throw error
        }
    }

    /// Waits for the image to show `node` in `state`; false after `limit`.
    static func waitFor(_ node: NodeID, _ state: NodeState, in image: MetadataFollower, within limit: Duration) async -> Bool {
        if await image.state.nodes[node]?.state == state { return true }
        return (try? await withTimeout(limit, "node \(node) \(state)") {
            for await _ in await image.versions() {
                if await image.state.nodes[node]?.state == state { return true }
            }
            return false
        }) ?? false
    }

    @Test(.timeLimit(.minutes(1)))
    func closedHeartbeatConnectionFencesWithinTheGraceAndAReconnectingNodeStays() async throws {
        let (cluster, leader, node) = try await Self.startLeader()
        defer { cluster.cleanup() }
        // The image follows through a client of its own, so its long polls never share the nodes' connections.
        let observer = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let image = MetadataFollower(client: observer, logger: testLogger)
        let following = Task { await image.run() }
        defer { following.cancel() }

        // Node 7 registers, then its process "dies": its connection closes, nothing follows. Its session stays bound
        // to the registration's connection, which also carries a metadata long poll (below).
        let dying = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let seven = try await dying.register(Self.registration(7))
        // A WAL writer on the same connection keeps its full session: its tail cannot move without it anyway.
        _ = try await dying.register(NodeRegistration(id: 5, kind: .walWriter, zone: "a", listener: "127.0.0.1:9105", admin: "127.0.0.1:9605"))
        // Node 8 keeps heartbeating through connections that get cut under it.
        let live = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let eight = try await live.register(Self.registration(8))
        let eightRegisteredOn = try #require(await node.sessionConnectionForTesting(8))
        let beating = Task {
            await live.runHeartbeats(nodeId: 8, incarnation: eight.incarnation, interval: NodeMembership.maxHeartbeatInterval) { 0 }
        }
        defer { beating.cancel() }
        #expect(await image.waitForVersion(eight.metadataVersion, timeout: .seconds(5)))
        #expect(await image.state.nodes[7]?.state == .active)
        #expect(await image.state.nodes[8]?.state == .active)
        // Heartbeats have a connection of their own, so they never queue behind the client's other calls.
        // The session's connection changes inside the controller with nothing announcing it: poll.
        let movedToHeartbeatConnection = await waitUntil(timeout: .seconds(5)) {
            (await node.sessionConnectionForTesting(8) ?? eightRegisteredOn) != eightRegisteredOn
        }
        #expect(movedToHeartbeatConnection, "heartbeats came over the registration's connection")
        let eightFirstConnection = await node.sessionConnectionForTesting(8) ?? eightRegisteredOn
        // The close must not wait out the long poll on node 7's connection.
        let waitingBefore = await node.fetchWaitersForTesting
        let poll = Task { try? await dying.fetchMetadata(from: cluster.endpoints[leader], fromVersion: 1 << 40, maxWait: .seconds(25)) }
        defer { poll.cancel() }
        let polling = await waitUntil(timeout: .seconds(5)) { await node.fetchWaitersForTesting > waitingBefore }
        #expect(polling, "the long poll did not reach the controller")

        let clock = ContinuousClock()
        let closedAt = clock.now
        await dying.close()
        await live.close()

        // Fenced on the close path: well before the 30 s session timeout.
        #expect(await Self.waitFor(7, .fenced, in: image, within: .seconds(10)), "node 7 not fenced after its connection closed")
        let fencedAfter = closedAt.duration(to: clock.now)
        #expect(fencedAfter >= Self.grace, "fenced after \(fencedAfter), before the grace ran out")
        #expect(fencedAfter < .seconds(10))
        #expect(await Self.waitFor(5, .fenced, in: image, within: .milliseconds(500)) == false, "a WAL writer was fenced on the close path")

        // Node 8's old connection closed at the same moment, so its deadline has passed too; it heartbeated on a
        // new connection in time and stays active through another grace period and the checks in it.
        #expect(await Self.waitFor(8, .fenced, in: image, within: Self.grace + .milliseconds(500)) == false, "a live node that reconnected was fenced")
        #expect(await image.state.nodes[8]?.state == .active)
        let eightNow = await node.sessionConnectionForTesting(8)
        #expect(eightNow != nil && eightNow != eightFirstConnection, "node 8's session should have moved to a new connection")

        // The fenced node comes back by heartbeating again, as after a session timeout.
        #expect(try await dying.heartbeat(nodeId: 7, incarnation: seven.incarnation, metadataVersion: 0))
        #expect(await Self.waitFor(7, .active, in: image, within: .seconds(5)))

        beating.cancel()
        await dying.close()
        await live.close()
        await observer.close()
        await cluster.stopAll()
    }

    @Test(.timeLimit(.minutes(1)))
    func unrelatedConnectionClosingDoesNotShortenASession() async throws {
        let (cluster, _, node) = try await Self.startLeader()
        defer { cluster.cleanup() }
        // The image follows through a client of its own, so its long polls never share the nodes' connections.
        let observer = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let image = MetadataFollower(client: observer, logger: testLogger)
        let following = Task { await image.run() }
        defer { following.cancel() }

        // Node 9 registers through one client and moves its heartbeats to another: only the latest heartbeat's
        // connection counts, so closing the first one changes nothing.
        let first = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        let nine = try await first.register(Self.registration(9))
        let registeredOn = try #require(await node.sessionConnectionForTesting(9))
        let second = ControllerClient(endpoints: cluster.endpoints, logger: testLogger)
        #expect(try await second.heartbeat(nodeId: 9, incarnation: nine.incarnation, metadataVersion: 0) == false)
        let heartbeatOn = try #require(await node.sessionConnectionForTesting(9))
        #expect(heartbeatOn != registeredOn)
        #expect(await image.waitForVersion(nine.metadataVersion, timeout: .seconds(5)))

        await first.close()
        #expect(await Self.waitFor(9, .fenced, in: image, within: Self.grace + .milliseconds(700)) == false, "closing an older connection fenced node 9")
        #expect(await node.sessionConnectionForTesting(9) == heartbeatOn)

        // Closing the connection its latest heartbeat came over does fence it.
        await second.close()
        #expect(await Self.waitFor(9, .fenced, in: image, within: .seconds(10)))

        await observer.close()
        await cluster.stopAll()
    }
}
