import ArgumentParser
import Logging

/// The flags every Floe executable accepts (DESIGN §7 "Operations surface"); embed with `@OptionGroup`.
public struct CommonOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("node-id"), help: "This instance's node id (FLOE_NODE_ID).", transform: CommonOptions.nodeID)
    public var nodeID: Int32

    @Option(help: "Zone label, e.g. an availability zone (FLOE_ZONE).")
    public var zone: String = "local"

    @Option(help: "HOST:PORT of the Kafka-framed listener (FLOE_LISTEN).", transform: HostPort.argument)
    public var listen: HostPort

    @Option(help: "HOST:PORT other processes use to reach --listen; defaults to --listen (FLOE_ADVERTISE).", transform: HostPort.argument)
    public var advertise: HostPort?

    @Option(help: "HOST:PORT of the admin HTTP server: /healthz /readyz /metrics /status (FLOE_ADMIN).", transform: HostPort.argument)
    public var admin: HostPort

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (FLOE_LOG_LEVEL).", transform: CommonOptions.logLevel)
    public var logLevel: Logger.Level = .info

    public init() {}

    /// Where peers should connect: `--advertise`, else `--listen`.
    public var advertised: HostPort { advertise ?? listen }

    static func nodeID(_ text: String) throws -> Int32 {
        guard let value = Int32(text), value >= 0 else {
            throw ValidationError("node id '\(text)' is not a non-negative 32-bit integer")
        }
        return value
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
    @Option(help: "Comma-separated HOST:PORT of the controllers (FLOE_CONTROLLERS).", transform: HostPort.listArgument)
    public var controllers: HostPortList

    public init() {}
}
