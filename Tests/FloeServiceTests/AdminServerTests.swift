import FloeService
import Foundation
import Logging
import Metrics
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
        _ body: @Sendable (HostPort) async throws -> Void
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
            HostPort(host: "127.0.0.1", port: 0), handlers: handlers, logger: Logger(label: "test")
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
