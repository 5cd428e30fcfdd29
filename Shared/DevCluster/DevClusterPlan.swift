import KafkaTransport
import FloeService
import Foundation

/// The services a local cluster consists of, their node ids and ports, derived deterministically from a few choices.
///
/// Port plan (B = base port, default 9092):
/// - brokers: listen B+j, admin B+300+j (j = 0…49 across all zones; 9092…, 9392…)
/// - controllers: listen B+98+i, admin B+198+i (i = 0…4; 9190…, 9290…)
/// - WAL writers, one per zone z: listen B+118+z, admin B+218+z (9210…, 9310…)
/// - zone routers, one per zone z: listen B+128+z, admin B+228+z (9220…, 9320…)
/// - compactor: listen B+138, admin B+238 (9230, 9330)
///
/// Node ids: controllers 1…, WAL writers 201…, brokers 101…, zone routers 301…, compactor 401.
public struct DevClusterPlan: Sendable, Equatable {
    public var controllers: Int
    public var zones: [String]
    public var brokersPerZone: Int
    /// Absolute data directory.
    public var dataDirectory: String
    public var basePort: Int
    public var host: String
    /// `--object-store` URL handed to services that use object storage.
    public var objectStore: String
    public var logLevel: String
    /// Extra arguments for every broker (e.g. `--wal-bypass` for the benchmark comparison).
    public var brokerArguments: [String] = []
    /// Extra arguments for every WAL writer.
    public var walArguments: [String] = []
    /// Extra arguments for the compactor.
    public var compactorArguments: [String] = []

    /// Limits that keep the port blocks above from overlapping.
    public static let maxZones = 10
    public static let maxBrokers = 50
    public static let maxControllers = 5

    /// Why a plan cannot be laid out.
    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    /// Validates the choices; `objectStore` defaults to a local directory under the data directory.
    public init(
        controllers: Int = 1, zones: [String] = ["a"], brokersPerZone: Int = 1, dataDirectory: String,
        basePort: Int = 9092, host: String = "127.0.0.1", objectStore: String? = nil, logLevel: String = "info"
    ) throws(Invalid) {
        guard (1...Self.maxControllers).contains(controllers) else {
            throw Invalid(description: "--controllers must be 1 to \(Self.maxControllers) (1 or 3 are the usual choices)")
        }
        guard !zones.isEmpty, zones.count <= Self.maxZones else {
            throw Invalid(description: "--zones needs 1 to \(Self.maxZones) zone names")
        }
        guard Set(zones).count == zones.count, zones.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" } }) else {
            throw Invalid(description: "--zones must be distinct names of letters, digits and '-'")
        }
        guard brokersPerZone >= 0, brokersPerZone * zones.count <= Self.maxBrokers else {
            throw Invalid(description: "--brokers-per-zone × zones must be 0 to \(Self.maxBrokers)")
        }
        guard basePort >= 1024, basePort + 350 <= 65_535 else {
            throw Invalid(description: "--base-port must be from 1024 to \(65_535 - 350)")
        }
        self.controllers = controllers
        self.zones = zones
        self.brokersPerZone = brokersPerZone
        self.dataDirectory = dataDirectory
        self.basePort = basePort
        self.host = host
        self.objectStore = objectStore ?? "file://\(dataDirectory)/objects"
        self.logLevel = logLevel
    }

    /// `--zones`: names separated by commas (`a,b,c`), or a count (`3` is `a,b,c`).
    public static func zoneNames(_ text: String) -> [String] {
        if let count = Int(text), (1...maxZones).contains(count) {
            return (0..<count).map { String(UnicodeScalar(UInt8(ascii: "a") + UInt8($0))) }
        }
        return text.split(separator: ",").map { String($0) }
    }

    /// One service before its executable has been located.
    public struct Planned: Sendable, Equatable {
        public var kind: String
        public var executable: String
        public var nodeID: Int32
        public var zone: String
        public var listen: KafkaEndpoint
        public var admin: KafkaEndpoint
        public var arguments: [String]
    }

    /// A kind of service and how many of it, with which arguments; adding a kind means adding one entry to ``kinds``.
    public struct Kind: Sendable {
        public var name: String
        public var executable: String
        public var plan: @Sendable (DevClusterPlan) -> [Planned]
    }

    /// Every kind `floe dev` knows, in start order (controllers first: everything else registers with them).
    public static let kinds: [Kind] = [
        Kind(name: "controller", executable: "floe-controller") { plan in
            (0..<plan.controllers).map { i in
                let id = Int32(i + 1)
                return plan.service(
                    "controller", "floe-controller", id: id, zone: plan.zones[i % plan.zones.count],
                    listen: 98 + i, admin: 198 + i,
                    extra: ["--voters", plan.voters, "--data-dir", plan.dataDirectory + "/controller-\(id)"],
                    controllers: false
                )
            }
        },
        Kind(name: "wal-writer", executable: "floe-wal-writer") { plan in
            plan.zones.enumerated().map { z, zone in
                plan.service(
                    "wal-writer", "floe-wal-writer", id: Int32(201 + z), zone: zone, listen: 118 + z, admin: 218 + z,
                    extra: ["--volume", plan.dataDirectory + "/wal-\(zone)", "--object-store", plan.objectStore] + plan.walArguments
                )
            }
        },
        Kind(name: "broker", executable: "floe-broker") { plan in
            plan.zones.enumerated().flatMap { z, zone in
                (0..<plan.brokersPerZone).map { b in
                    let j = z * plan.brokersPerZone + b
                    return plan.service(
                        "broker", "floe-broker", id: Int32(101 + j), zone: zone, listen: j, admin: 300 + j,
                        extra: ["--object-store", plan.objectStore] + plan.brokerArguments
                    )
                }
            }
        },
        Kind(name: "zone-router", executable: "floe-zone-router") { plan in
            plan.zones.enumerated().map { z, zone in
                plan.service("zone-router", "floe-zone-router", id: Int32(301 + z), zone: zone, listen: 128 + z, admin: 228 + z, extra: [])
            }
        },
        Kind(name: "compactor", executable: "floe-compactor") { plan in
            [plan.service("compactor", "floe-compactor", id: 401, zone: plan.zones[0], listen: 138, admin: 238, extra: ["--object-store", plan.objectStore] + plan.compactorArguments)]
        },
    ]

    /// Every service of the cluster, in start order.
    public func services() -> [Planned] {
        Self.kinds.flatMap { $0.plan(self) }
    }

    /// Controller listen addresses, as other services' `--controllers`.
    public var controllerAddresses: String {
        (0..<controllers).map { KafkaEndpoint(host: host, port: basePort + 98 + $0).description }.joined(separator: ",")
    }

    /// `1@HOST:PORT,2@…` for the controllers' `--voters`.
    public var voters: String {
        (0..<controllers).map { "\($0 + 1)@\(KafkaEndpoint(host: host, port: basePort + 98 + $0))" }.joined(separator: ",")
    }

    func service(
        _ kind: String, _ executable: String, id: Int32, zone: String, listen: Int, admin: Int,
        extra: [String], controllers: Bool = true
    ) -> Planned {
        let listenAddress = KafkaEndpoint(host: host, port: basePort + listen)
        let adminAddress = KafkaEndpoint(host: host, port: basePort + admin)
        var arguments = [
            "--node-id", "\(id)", "--zone", zone, "--listen", listenAddress.description,
            "--advertise", listenAddress.description, "--admin", adminAddress.description,
        ]
        if controllers { arguments += ["--controllers", controllerAddresses] }
        arguments += extra + ["--log-level", logLevel]
        return Planned(kind: kind, executable: executable, nodeID: id, zone: zone, listen: listenAddress, admin: adminAddress, arguments: arguments)
    }

    /// Splits the plan into specs whose executable exists in `binDirectory` and the kinds skipped for lack of one.
    public func resolve(binDirectory: String) -> (specs: [ServiceSpec], skipped: [String]) {
        var specs: [ServiceSpec] = []
        var skipped: [String] = []
        for kind in Self.kinds {
            let planned = kind.plan(self)
            guard !planned.isEmpty else { continue }
            let path = binDirectory + "/" + kind.executable
            guard FileManager.default.isExecutableFile(atPath: path) else {
                skipped.append(kind.name)
                continue
            }
            specs += planned.map {
                ServiceSpec(kind: $0.kind, nodeID: $0.nodeID, zone: $0.zone, executable: path, arguments: $0.arguments, listen: $0.listen, admin: $0.admin)
            }
        }
        return (specs, skipped)
    }

    /// Where sibling executables live: `FLOE_BIN_DIR`, else the directory of the running executable.
    public static func binDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let override = environment["FLOE_BIN_DIR"], !override.isEmpty { return override }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? (CommandLine.arguments.first ?? ".")
        return URL(fileURLWithPath: executable).deletingLastPathComponent().path
    }
}
