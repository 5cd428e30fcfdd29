import FloeService
import Foundation
import Testing

/// The zones each overlay is meant to run in.
private let expectedZones: [String: [String]] = ["single-zone": ["a"], "three-zones": ["a", "b", "c"]]

/// ServiceRunner's default graceful shutdown timeout: every service drains within it.
private let drainSeconds = 20

/// Most WAL writers a zone may run before its ordinal ids reach the next zone's (Deploy/README.md).
private let maxWALWritersPerZone = 10

@Suite("Kubernetes manifests", .serialized)
struct ManifestTests {
    @Test func everyOverlayIsChecked() throws {
        #expect(try Overlay.names() == expectedZones.keys.sorted())
    }

    @Test(arguments: expectedZones.keys.sorted())
    func containersUseOnlyFlagsTheirExecutableAccepts(overlay: String) throws {
        var expander = PodExpander(objects: try Overlay.render(overlay))
        let pods = try expander.pods()
        #expect(Set(pods.map(\.executableName)) == ["floe-controller", "floe-wal-writer", "floe-broker", "floe-compactor"])
        for pod in pods {
            let executable = try Executable.named(pod.executableName)
            let flags = Set(executable.flags)
            let variables = executable.variables
            for argument in pod.arguments where argument.hasPrefix("--") {
                let flag = String(argument.dropFirst(2).split(separator: "=", maxSplits: 1).first ?? "")
                if !flags.contains(flag) { Issue.record("\(pod.workload.label): \(pod.executableName) has no flag --\(flag)") }
            }
            for variable in pod.declaredVariables where variable.hasPrefix("FLOE_") && !variables.contains(variable) {
                Issue.record("\(pod.workload.label): \(pod.executableName) reads no \(variable)")
            }
        }
    }

    @Test(arguments: expectedZones.keys.sorted())
    func everyPodParsesAndNodeIDsAreUnique(overlay: String) throws {
        let objects = try Overlay.render(overlay)
        var expander = PodExpander(objects: objects)
        try checkNodeIDs(try expander.pods(), overlay: overlay, scaled: false)
        // Scaled out as far as the id scheme allows, the ids must still not meet.
        var overrides: [String: Int] = [:]
        for object in objects where object.kind == "StatefulSet" && object.name.hasPrefix("floe-wal-writer") {
            overrides[object.name] = maxWALWritersPerZone
        }
        for object in objects where object.kind == "Deployment" { overrides[object.name] = 20 }
        var scaled = PodExpander(objects: objects)
        try checkNodeIDs(try scaled.pods(replicas: overrides), overlay: overlay, scaled: true)
    }

    private func checkNodeIDs(_ pods: [Pod], overlay: String, scaled: Bool) throws {
        var owners: [Int32: String] = [:]
        for pod in pods {
            let service = try parse(pod)
            let id = service.common.nodeID
            #expect(id >= 0, "\(pod.name) resolved no node id")
            if let other = owners.updateValue(pod.name, forKey: id) {
                Issue.record("\(overlay)\(scaled ? " (scaled out)" : ""): \(pod.name) and \(other) both have node id \(id)")
            }
        }
        #expect(owners.count == pods.count)
    }

    @Test(arguments: expectedZones.keys.sorted())
    func controllersVotersAndAddressesAgree(overlay: String) throws {
        let objects = try Overlay.render(overlay)
        var expander = PodExpander(objects: objects)
        let pods = try expander.pods()
        let controllers = pods.filter { $0.executableName == "floe-controller" }
        #expect(controllers.count == 3)
        var advertised: [Int32: String] = [:]
        for pod in controllers {
            let service = try parse(pod)
            advertised[service.common.nodeID] = service.common.advertised.description
            let voters = try #require(service.voters)
            var table: [Int32: String] = [:]
            for entry in voters.split(separator: ",") {
                let parts = entry.split(separator: "@", maxSplits: 1)
                let id = try #require(parts.count == 2 ? Int32(parts[0]) : nil, "voter '\(entry)' is not ID@HOST:PORT")
                table[id] = String(parts[1])
            }
            #expect(table[service.common.nodeID] == service.common.advertised.description, "\(pod.name) is not the voter its id names")
            #expect(table.count == controllers.count, "FLOE_VOTERS lists \(table.count) voters for \(controllers.count) controllers")
        }
        let addresses = Set(advertised.values)
        for pod in pods where pod.executableName != "floe-controller" {
            let service = try parse(pod)
            #expect(Set(try #require(service.controllers).map(\.description)) == addresses, "\(pod.name) lists other controllers")
        }
    }

    @Test(arguments: expectedZones.keys.sorted())
    func advertisedAddressesReachThePod(overlay: String) throws {
        let objects = try Overlay.render(overlay)
        var expander = PodExpander(objects: objects)
        for pod in try expander.pods() {
            let advertised = try parse(pod).common.advertised
            let kafkaPort = containerPort(pod, "kafka")
            if try Executable.named(pod.executableName).servesKafka {
                #expect(advertised.port == kafkaPort, "\(pod.name) advertises port \(advertised.port), its kafka port is \(kafkaPort ?? -1)")
            } else {
                #expect(kafkaPort == nil, "\(pod.workload.label) declares a kafka port, but \(pod.executableName) serves no Kafka API")
            }
            if pod.workload.kind == "Deployment" {
                #expect(advertised.host == pod.ip, "\(pod.name) advertises \(advertised.host), not its pod IP")
                continue
            }
            // A StatefulSet pod is reached as POD.SERVICE through its headless governing Service.
            let serviceName = try #require(pod.workload.string("spec", "serviceName"), "\(pod.workload.label) has no serviceName")
            #expect(advertised.host == "\(pod.name).\(serviceName)", "\(pod.name) advertises \(advertised.host)")
            let service = try #require(objects.first { $0.kind == "Service" && $0.name == serviceName }, "no Service \(serviceName)")
            #expect(service.string("spec", "clusterIP") == "None", "\(serviceName) is not headless")
            #expect(service.value("spec", "publishNotReadyAddresses") as? Bool == true, "\(serviceName) hides pods that are not ready")
            let selector = service.dictionary("spec", "selector") as? [String: String] ?? [:]
            #expect(!selector.isEmpty && selector.allSatisfy { pod.labels[$0.key] == $0.value }, "\(serviceName) does not select \(pod.name)")
        }
        let bootstrap = try #require(objects.first { $0.kind == "Service" && $0.name == "floe-bootstrap" })
        let selector = bootstrap.dictionary("spec", "selector") as? [String: String] ?? [:]
        let brokers = try expander.pods().filter { $0.executableName == "floe-broker" }
        #expect(!brokers.isEmpty && brokers.allSatisfy { pod in selector.allSatisfy { pod.labels[$0.key] == $0.value } })
        let others = try expander.pods().filter { $0.executableName != "floe-broker" }
        #expect(others.allSatisfy { pod in !selector.allSatisfy { pod.labels[$0.key] == $0.value } }, "floe-bootstrap selects non-brokers")
    }

    @Test(arguments: expectedZones.keys.sorted())
    func probesScrapingAndShutdownUseTheAdminPort(overlay: String) throws {
        var expander = PodExpander(objects: try Overlay.render(overlay))
        for pod in try expander.pods() {
            let admin = try parse(pod).common.admin
            let adminPort = try #require(containerPort(pod, "admin"), "\(pod.workload.label) declares no admin port")
            #expect(admin.port == adminPort)
            let annotations = KubeObject.value(pod.template, ["metadata", "annotations"]) as? [String: String] ?? [:]
            #expect(annotations["prometheus.io/scrape"] == "true", "\(pod.workload.label) is not scraped")
            #expect(annotations["prometheus.io/port"] == "\(adminPort)", "\(pod.workload.label) is scraped on another port")
            #expect(annotations["prometheus.io/path"] == "/metrics")
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let get = KubeObject.value(pod.container, [probe, "httpGet"]) as? [String: Any]
                #expect(get?["path"] as? String == path, "\(pod.workload.label) \(probe)")
                #expect(get?["port"] as? String == "admin" || get?["port"] as? Int == adminPort, "\(pod.workload.label) \(probe) port")
            }
            let grace = KubeObject.value(pod.template, ["spec", "terminationGracePeriodSeconds"]) as? Int ?? 30
            #expect(grace > drainSeconds, "\(pod.workload.label) may be killed before it drains")
            let resources = pod.container["resources"] as? [String: Any]
            for part in ["requests", "limits"] {
                let values = resources?[part] as? [String: Any]
                #expect(values?["cpu"] != nil && values?["memory"] != nil, "\(pod.workload.label) lacks \(part)")
            }
        }
        let objects = expander.objects
        for workload in objects where workload.kind == "StatefulSet" || workload.kind == "Deployment" {
            let labels = workload.dictionary("spec", "template", "metadata", "labels") as? [String: String] ?? [:]
            let budgets = objects.filter { object in
                guard object.kind == "PodDisruptionBudget", let selector = object.dictionary("spec", "selector", "matchLabels") as? [String: String]
                else { return false }
                return selector.allSatisfy { labels[$0.key] == $0.value }
            }
            #expect(budgets.count == 1, "\(workload.label) is covered by \(budgets.count) PodDisruptionBudgets")
        }
    }

    @Test(arguments: expectedZones.keys.sorted())
    func eachZoneHasItsWriterAndBrokersPinnedToIt(overlay: String) throws {
        var expander = PodExpander(objects: try Overlay.render(overlay))
        let pods = try expander.pods()
        var zonesByKind: [String: Set<String>] = [:]
        var topologyZones: [String: Set<String>] = [:]
        for pod in pods where pod.executableName == "floe-wal-writer" || pod.executableName == "floe-broker" {
            let zone = try parse(pod).common.zone
            #expect(pod.labels["floe.io/zone"] == zone, "\(pod.name) has FLOE_ZONE \(zone) but zone label \(pod.labels["floe.io/zone"] ?? "none")")
            zonesByKind[pod.executableName, default: []].insert(zone)
            let terms = KubeObject.value(
                pod.template, ["spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"])
                as? [[String: Any]] ?? []
            let values = terms.flatMap { $0["matchExpressions"] as? [[String: Any]] ?? [] }
                .filter { $0["key"] as? String == "topology.kubernetes.io/zone" && $0["operator"] as? String == "In" }
                .flatMap { $0["values"] as? [String] ?? [] }
            #expect(values.count == 1, "\(pod.workload.label) is not pinned to one zone: \(values)")
            topologyZones[zone, default: []].formUnion(values)
        }
        let zones = Set(try #require(expectedZones[overlay]))
        #expect(zonesByKind["floe-wal-writer"] == zones)
        #expect(zonesByKind["floe-broker"] == zones)
        // Each Floe zone runs in one Kubernetes zone, a different one from every other Floe zone's.
        #expect(topologyZones.values.allSatisfy { $0.count == 1 })
        #expect(Set(topologyZones.values.flatMap { $0 }).count == zones.count)
        #expect(!topologyZones.values.flatMap { $0 }.contains("TOPOLOGY_ZONE"), "a zone's topology placeholder was not filled in")
    }

    /// One compactor Deployment serves every zone: not pinned to one, and its pods stop before their delete grace ends.
    @Test(arguments: expectedZones.keys.sorted())
    func compactorIsOneClusterWideDeployment(overlay: String) throws {
        let objects = try Overlay.render(overlay)
        var expander = PodExpander(objects: objects)
        let pods = try expander.pods().filter { $0.executableName == "floe-compactor" }
        #expect(Set(pods.map(\.workload.label)) == ["Deployment/floe-compactor"], "the compactor runs in \(pods.map(\.workload.label))")
        #expect(pods.count == 1, "\(pods.count) compactors by default, not 1")
        let executable = try Executable.named("floe-compactor")
        for pod in pods {
            let common = try parse(pod).common
            #expect(common.zone == "cluster", "\(pod.name) has FLOE_ZONE \(common.zone)")
            #expect(pod.labels["floe.io/zone"] == nil, "\(pod.workload.label) carries a zone label")
            #expect(KubeObject.value(pod.template, ["spec", "affinity", "nodeAffinity"]) == nil, "\(pod.workload.label) is pinned to nodes")
            // `auto` from the pod IP, like a broker: above every fixed and ordinal id.
            #expect(common.nodeID >= NodeIDSpec.autoMinimum, "\(pod.name) has node id \(common.nodeID)")
            // A terminating compactor is gone before objects destroyed under it may be deleted.
            let deleteGrace = pod.environment["FLOE_DELETE_GRACE_MS"] ?? executable.defaults["delete-grace-ms"]
            let deleteGraceMs = try #require(deleteGrace.flatMap { Int($0) }, "floe-compactor states no --delete-grace-ms default")
            let grace = KubeObject.value(pod.template, ["spec", "terminationGracePeriodSeconds"]) as? Int ?? 30
            #expect(grace * 1000 < deleteGraceMs, "\(pod.workload.label) may run \(grace) s after SIGTERM, past the \(deleteGraceMs) ms delete grace")
        }
        let budget = try #require(objects.first { $0.kind == "PodDisruptionBudget" && $0.name == "floe-compactor" })
        #expect(budget.value("spec", "maxUnavailable") as? Int == 1)
    }

    @Test func containerImageBuildsEveryExecutableTheManifestsRun() throws {
        let containerfile = try String(contentsOf: Overlay.repositoryRoot.appendingPathComponent("Deploy/Containerfile"), encoding: .utf8)
        // Both loops (build, then install) must name every executable.
        let loops = containerfile.split(separator: "\n").filter { $0.contains("for product in") }
        #expect(loops.count == 2)
        var used = Set<String>()
        for overlay in expectedZones.keys {
            var expander = PodExpander(objects: try Overlay.render(overlay))
            used.formUnion(try expander.pods().map(\.executableName))
        }
        #expect(!used.isEmpty)
        for loop in loops {
            let products = Set(loop.split(separator: " ").map(String.init))
            for executable in used.sorted() {
                #expect(products.contains(executable), "the Containerfile does not build \(executable): \(loop)")
            }
        }
    }

    private func parse(_ pod: Pod) throws -> ParsedService {
        let executable = try Executable.named(pod.executableName)
        do {
            return try executable.parse(pod.arguments, pod.environment)
        } catch {
            throw DeployTestFailure("\(pod.name) (\(pod.executableName)) does not start: \(error)")
        }
    }

    private func containerPort(_ pod: Pod, _ name: String) -> Int? {
        let ports = pod.container["ports"] as? [[String: Any]] ?? []
        return ports.first { $0["name"] as? String == name }?["containerPort"] as? Int
    }
}

@Suite struct KubernetesExpansionTests {
    @Test func expandsDefinedVariablesOnly() {
        let environment = ["POD_IP": "10.0.0.1", "NAME": "w-0"]
        #expect(PodExpander.expand("$(POD_IP):9092", environment) == "10.0.0.1:9092")
        #expect(PodExpander.expand("$(NAME).$(SERVICE):1", environment) == "w-0.$(SERVICE):1")
        #expect(PodExpander.expand("$$(POD_IP) $ x$", environment) == "$(POD_IP) $ x$")
    }
}
