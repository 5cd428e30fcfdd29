import KafkaTransport
import FloeService
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization
import Testing

struct ControllerDetails: Encodable, Sendable {
    var role: String
    var term: Int64
    var leaderID: Int32?

    enum CodingKeys: String, CodingKey {
        case role, term
        case leaderID = "leader_id"
    }
}

@Suite struct AdminServerTests {
    /// Starts a server on an ephemeral loopback port, runs `body` against it, then stops it.
    func withServer(
        ready: ReadyFlag = ReadyFlag(true),
        _ body: @Sendable (KafkaEndpoint) async throws -> Void
    ) async throws {
        let handlers = AdminServer.Handlers(
            ready: { ready.value },
            status: {
                ServiceStatus(
                    nodeID: 3, kind: "controller", zone: "z1", incarnation: 42,
                    details: ControllerDetails(role: "leader", term: 7, leaderID: 3)
                )
            }
        )
        let server = try await AdminServer.bind(
            KafkaEndpoint(host: "127.0.0.1", port: 0), handlers: handlers, logger: Logger(label: "test")
        )
        #expect(server.boundAddress.port != 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            try await body(server.boundAddress)
        }
    }

    @Test func healthzAndStatusJSON() async throws {
        try await withServer { address in
            let health = try await AdminClient.get(address, path: "/healthz")
            #expect(health.status == 200)
            #expect(health.text == "ok\n")

            let status = try await AdminClient.get(address, path: "/status")
            #expect(status.status == 200)
            let json = try JSONSerialization.jsonObject(with: Data(status.body)) as? [String: Any]
            #expect(json?["node_id"] as? Int == 3)
            #expect(json?["kind"] as? String == "controller")
            #expect(json?["zone"] as? String == "z1")
            #expect(json?["incarnation"] as? Int == 42)
            #expect(json?["role"] as? String == "leader")
            #expect(json?["term"] as? Int == 7)
            #expect(json?["leader_id"] as? Int == 3)
        }
    }

    @Test func readyzFollowsTheReadinessClosure() async throws {
        let ready = ReadyFlag(false)
        try await withServer(ready: ready) { address in
            let before = try await AdminClient.get(address, path: "/readyz")
            #expect(before.status == 503)
            ready.value = true
            let after = try await AdminClient.get(address, path: "/readyz")
            #expect(after.status == 200)
            ready.value = false
            let again = try await AdminClient.get(address, path: "/readyz")
            #expect(again.status == 503)
        }
    }

    @Test func drainingOverridesReadiness() async throws {
        let server = try await AdminServer.bind(
            KafkaEndpoint(host: "127.0.0.1", port: 0),
            handlers: AdminServer.Handlers(ready: { true }, status: { ServiceStatus(nodeID: 1, kind: "k", zone: "z", incarnation: 0) }),
            logger: Logger(label: "test")
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            let before = try await AdminClient.get(server.boundAddress, path: "/readyz")
            #expect(before.status == 200)
            server.markDraining()
            let after = try await AdminClient.get(server.boundAddress, path: "/readyz")
            #expect(after.status == 503)
            #expect(after.text == "draining\n")
            let health = try await AdminClient.get(server.boundAddress, path: "/healthz")
            #expect(health.status == 200)
        }
    }

    @Test func metricsExposeAnIncrementedCounter() async throws {
        FloeMetrics.bootstrap()
        let counter = Counter(label: "floe_admin_test_requests_total", dimensions: [("kind", "test")])
        counter.increment(by: 5)
        try await withServer { address in
            let metrics = try await AdminClient.get(address, path: "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.text.contains("floe_admin_test_requests_total{kind=\"test\"} 5"))
            #expect(metrics.text.contains("# TYPE floe_admin_test_requests_total counter"))
        }
    }

    @Test func unknownPathIs404AndOtherMethods405() async throws {
        try await withServer { address in
            let missing = try await AdminClient.get(address, path: "/nope")
            #expect(missing.status == 404)
            let post = try await AdminClient.get(address, paths: ["/healthz"], method: .POST)
            #expect(post.first?.status == 405)
        }
    }

    @Test func idleConnectionsAreClosed() async throws {
        let server = try await AdminServer.bind(
            KafkaEndpoint(host: "127.0.0.1", port: 0),
            handlers: AdminServer.Handlers(ready: { true }, status: { ServiceStatus(nodeID: 1, kind: "k", zone: "z", incarnation: 0) }),
            logger: Logger(label: "test"), idleTimeout: .milliseconds(200)
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: server.boundAddress.port).get()
            let clock = ContinuousClock()
            let start = clock.now
            // Bounded: if the server never closes it, the test fails after 10 s instead of hanging.
            let closed = try await withThrowingTaskGroup(of: Bool.self) { waits in
                waits.addTask { try await channel.closeFuture.get(); return true }
                waits.addTask { try await Task.sleep(for: .seconds(10)); return false }
                defer { waits.cancelAll() }
                return try await waits.next() ?? false
            }
            if !closed { try? await channel.close() }
            #expect(closed)
            #expect(clock.now - start >= .milliseconds(150))
        }
    }

    @Test func keepAliveServesSeveralRequestsOnOneConnection() async throws {
        try await withServer { address in
            let responses = try await AdminClient.get(address, paths: ["/healthz", "/status", "/readyz", "/missing"])
            #expect(responses.map(\.status) == [200, 200, 200, 404])
        }
    }
}

final class ReadyFlag: Sendable {
    private let state: Mutex<Bool>
    init(_ initial: Bool) { state = Mutex(initial) }
    var value: Bool {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}
