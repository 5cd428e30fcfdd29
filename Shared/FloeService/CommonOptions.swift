import KafkaTransport
import ArgumentParser
import Foundation
import Logging

/// The flags every Floe executable accepts (DESIGN §7 "Operations surface"); embed with `@OptionGroup`.
public struct CommonOptions: ParsableArguments, Sendable {
    @Option(
        name: .customLong("node-id"),
        help: "This instance's node id: a number, ordinal:BASE (BASE + the pod name's trailing -N) or auto (from the advertised IPv4 address) (FLOE_NODE_ID).",
        transform: NodeIDSpec.argument)
    public var nodeIDSpec: NodeIDSpec

    @Option(
        name: .customLong("pod-name"),
        help: "Pod name whose trailing -N ordinal `--node-id ordinal:BASE` adds to BASE; defaults to $HOSTNAME (FLOE_POD_NAME).")
    public var podName: String?

    @Option(help: "Zone label, e.g. an availability zone (FLOE_ZONE).")
    public var zone: String = "local"

    @Option(help: "HOST:PORT of the Kafka-framed listener (FLOE_LISTEN).", transform: KafkaEndpoint.argument)
    public var listen: KafkaEndpoint

    @Option(help: "HOST:PORT other processes use to reach --listen; defaults to --listen (FLOE_ADVERTISE).", transform: KafkaEndpoint.argument)
    public var advertise: KafkaEndpoint?

    @Option(help: "HOST:PORT of the admin HTTP server: /healthz /readyz /metrics /status (FLOE_ADMIN).", transform: KafkaEndpoint.argument)
    public var admin: KafkaEndpoint

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (FLOE_LOG_LEVEL).", transform: CommonOptions.logLevel)
    public var logLevel: Logger.Level = .info

    public init() {}

    /// Where peers should connect: `--advertise`, else `--listen`.
    public var advertised: KafkaEndpoint { advertise ?? listen }

    /// This instance's node id, resolved from `--node-id` when the options were parsed.
    ///
    /// Parsing always runs ``validate()``, which turns `ordinal:` and `auto` into a number; a value built
    /// some other way and never validated reads as -1, which no node uses.
    public var nodeID: Int32 {
        get {
            if case .number(let value) = nodeIDSpec { return value }
            return -1
        }
        set { nodeIDSpec = .number(newValue) }
    }

    /// Resolves `ordinal:` and `auto` node ids; ArgumentParser calls this after parsing, so every later read of ``nodeID`` sees a number.
    public mutating func validate() throws {
        let pod = podName ?? ProcessInfo.processInfo.environment["HOSTNAME"]
        nodeIDSpec = .number(try nodeIDSpec.resolve(podName: pod, advertised: advertised))
    }

    static func logLevel(_ text: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("log level '\(text)' is not one of \(names)")
        }
        return level
    }
}

/// `--controllers HOST:PORT,…`: how non-controller services find the controller quorum.
public struct ControllerOptions: ParsableArguments, Sendable {
    @Option(help: "Comma-separated HOST:PORT of the controllers (FLOE_CONTROLLERS).", transform: KafkaEndpoint.listArgument)
    public var controllers: EndpointList

    public init() {}
}

/// How `--node-id` names an instance, so one manifest can serve every pod of a StatefulSet or Deployment.
///
/// - `N`: that number.
/// - `ordinal:BASE`: BASE plus the trailing `-N` of the pod name (StatefulSet pods are `NAME-0`, `NAME-1`, …).
///   Manifests give controllers `ordinal:1` (ids 1, 2, 3) and the WAL writers of the zone with index z
///   `ordinal:<200 + 10·z>` (zone a 200…209, zone b 210…219, …).
/// - `auto`: the advertised IPv4 address as `Int32(ip & 0x7fffffff)`, for Deployment pods (brokers). Live pods
///   have distinct IPs, and two addresses share an id only when they differ in the top bit alone, 2^31 apart,
///   which no pod network spans; so live pods get distinct ids. Every private range (10/8, 172.16/12,
///   192.168/16, 100.64/10) maps above 100,000,000, far from the small ids above; addresses mapping below
///   ``autoMinimum`` are refused so the two schemes can never meet.
public enum NodeIDSpec: Hashable, Sendable, CustomStringConvertible {
    /// Exactly this id.
    case number(Int32)
    /// `base` plus the pod's StatefulSet ordinal.
    case ordinal(base: Int32)
    /// Derived from the advertised IPv4 address.
    case auto

    /// The smallest id `auto` hands out; the manifests keep fixed and ordinal ids below it.
    public static let autoMinimum: Int32 = 1 << 16

    /// Parses `N`, `ordinal:BASE` or `auto`.
    public init(parsing text: String) throws(ValidationError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed == "auto" {
            self = .auto
        } else if trimmed.hasPrefix("ordinal:") {
            let base = trimmed.dropFirst("ordinal:".count)
            guard let value = Int32(base), value >= 0 else {
                throw ValidationError("node id '\(text)': the BASE of ordinal:BASE must be a non-negative 32-bit integer")
            }
            self = .ordinal(base: value)
        } else {
            guard let value = Int32(trimmed), value >= 0 else {
                throw ValidationError("node id '\(text)' is not a non-negative 32-bit integer, ordinal:BASE or auto")
            }
            self = .number(value)
        }
    }

    /// An ArgumentParser `transform:` for `--node-id`.
    public static func argument(_ text: String) throws -> NodeIDSpec {
        try NodeIDSpec(parsing: text)
    }

    public var description: String {
        switch self {
        case .number(let value): "\(value)"
        case .ordinal(let base): "ordinal:\(base)"
        case .auto: "auto"
        }
    }

    /// The number this spec stands for, given the pod name (for `ordinal:`) and the advertised endpoint (for `auto`).
    public func resolve(podName: String?, advertised: KafkaEndpoint) throws(ValidationError) -> Int32 {
        switch self {
        case .number(let value):
            return value
        case .ordinal(let base):
            guard let podName, !podName.isEmpty else {
                throw ValidationError("--node-id ordinal:\(base) needs the pod name: set FLOE_POD_NAME (--pod-name) or HOSTNAME")
            }
            guard let ordinal = Self.ordinal(of: podName) else {
                throw ValidationError("--node-id ordinal:\(base): pod name '\(podName)' does not end in -N (a StatefulSet ordinal)")
            }
            let (sum, overflow) = base.addingReportingOverflow(ordinal)
            guard !overflow else {
                throw ValidationError("--node-id ordinal:\(base) plus ordinal \(ordinal) of '\(podName)' exceeds a 32-bit node id")
            }
            return sum
        case .auto:
            guard let address = Self.ipv4(advertised.host) else {
                throw ValidationError(
                    "--node-id auto needs an IPv4 address in --advertise (or --listen); '\(advertised.host)' is not one")
            }
            let id = Int32(address & 0x7fff_ffff)
            guard id >= Self.autoMinimum else {
                throw ValidationError(
                    "--node-id auto: address \(advertised.host) maps to id \(id), below \(Self.autoMinimum) where fixed and ordinal ids live; advertise the pod IP")
            }
            return id
        }
    }

    /// The trailing `-N` of a StatefulSet pod name, or nil when there is none.
    static func ordinal(of podName: String) -> Int32? {
        guard let dash = podName.lastIndex(of: "-") else { return nil }
        let digits = podName[podName.index(after: dash)...]
        // Ordinals are small; ten or more digits is some other suffix, not an ordinal.
        guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int32(digits)
    }

    /// A dotted-quad IPv4 address as a number, or nil for anything else (names, IPv6, out-of-range parts).
    static func ipv4(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }), let octet = UInt32(part), octet <= 255
            else { return nil }
            value = value << 8 | octet
        }
        return value
    }
}
