import DevCluster
import FloeService
import Foundation
import Testing

@Suite struct PlanTests {
    @Test func threeControllersTwoZonesFollowThePortPlan() throws {
        let plan = try DevClusterPlan(controllers: 3, zones: ["a", "b"], brokersPerZone: 2, dataDirectory: "/d", basePort: 9092)
        let services = plan.services()
        let controllers = services.filter { $0.kind == "controller" }
        #expect(controllers.map(\.nodeID) == [1, 2, 3])
        #expect(controllers.map(\.listen.port) == [9190, 9191, 9192])
        #expect(controllers.map(\.admin.port) == [9290, 9291, 9292])
        #expect(controllers.map(\.zone) == ["a", "b", "a"])
        #expect(plan.voters == "1@127.0.0.1:9190,2@127.0.0.1:9191,3@127.0.0.1:9192")
        #expect(controllers[1].arguments == [
            "--node-id", "2", "--zone", "b", "--listen", "127.0.0.1:9191", "--advertise", "127.0.0.1:9191",
            "--admin", "127.0.0.1:9291", "--voters", plan.voters, "--data-dir", "/d/controller-2", "--log-level", "info",
        ])
        let brokers = services.filter { $0.kind == "broker" }
        #expect(brokers.map(\.listen.port) == [9092, 9093, 9094, 9095])
        #expect(brokers.map(\.zone) == ["a", "a", "b", "b"])
        #expect(brokers.allSatisfy { $0.arguments.contains("--controllers") && $0.arguments.contains("file:///d/objects") })
        let wal = services.filter { $0.kind == "wal-writer" }
        #expect(wal.map(\.zone) == ["a", "b"])
        #expect(wal[1].arguments.contains("/d/wal-b"))
        // No two services share a port, and none share a (kind, node id).
        let ports = services.flatMap { [$0.listen.port, $0.admin.port] }
        #expect(Set(ports).count == ports.count)
        #expect(Set(services.map { "\($0.kind)-\($0.nodeID)" }).count == services.count)
    }

    @Test func largestPlanHasNoPortCollisions() throws {
        let zones = (0..<DevClusterPlan.maxZones).map { "z\($0)" }
        let plan = try DevClusterPlan(controllers: 5, zones: zones, brokersPerZone: 5, dataDirectory: "/d", basePort: 20000)
        let ports = plan.services().flatMap { [$0.listen.port, $0.admin.port] }
        #expect(Set(ports).count == ports.count)
    }

    @Test func zonesAreNamesOrACount() {
        #expect(DevClusterPlan.zoneNames("3") == ["a", "b", "c"])
        #expect(DevClusterPlan.zoneNames("1") == ["a"])
        #expect(DevClusterPlan.zoneNames("eu-1,eu-2") == ["eu-1", "eu-2"])
        #expect(DevClusterPlan.zoneNames("b") == ["b"])
    }

    @Test func invalidChoicesAreRejected() {
        #expect(throws: DevClusterPlan.Invalid.self) { try DevClusterPlan(controllers: 0, dataDirectory: "/d") }
        #expect(throws: DevClusterPlan.Invalid.self) { try DevClusterPlan(zones: [], dataDirectory: "/d") }
        #expect(throws: DevClusterPlan.Invalid.self) { try DevClusterPlan(zones: ["a", "a"], dataDirectory: "/d") }
        #expect(throws: DevClusterPlan.Invalid.self) { try DevClusterPlan(zones: ["a b"], dataDirectory: "/d") }
        #expect(throws: DevClusterPlan.Invalid.self) { try DevClusterPlan(brokersPerZone: 51, dataDirectory: "/d") }
        #expect(throws: DevClusterPlan.Invalid.self) { try DevClusterPlan(dataDirectory: "/d", basePort: 80) }
    }

    @Test func onlyKindsWithAnExecutableAreStarted() throws {
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("floe-bin-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: bin) }
        try FileManager.default.createSymbolicLink(atPath: bin + "/floe-controller", withDestinationPath: "/bin/true")
        let plan = try DevClusterPlan(controllers: 3, dataDirectory: "/d")
        let (specs, skipped) = plan.resolve(binDirectory: bin)
        #expect(specs.map(\.name) == ["controller-1", "controller-2", "controller-3"])
        #expect(specs.allSatisfy { $0.executable == bin + "/floe-controller" })
        #expect(skipped == ["wal-writer", "broker", "zone-router", "compactor"])
        #expect(DevClusterPlan.binDirectory(environment: ["FLOE_BIN_DIR": bin]) == bin)
    }
}
