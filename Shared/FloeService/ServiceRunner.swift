import Logging
import ServiceLifecycle
import UnixSignals

/// Runs an executable's parts the same way everywhere: SIGTERM/SIGINT drain gracefully; past the timeout the rest is cancelled.
///
/// A service's whole `main`:
/// ```swift
/// @main struct ControllerMain: AsyncParsableCommand {
///     @OptionGroup var common: CommonOptions
///     @Option(name: .customLong("data-dir")) var dataDir: String
///     static func main() async { await mainWithEnvironment() }   // FLOE_* fallback
///     func run() async throws {
///         let logger = ServiceRunner.bootstrap(kind: "controller", options: common)
///         let controller = try Controller(options: common, dataDir: dataDir, logger: logger)  // a `Service`
///         try await ServiceRunner.run(
///             services: [controller], options: common,
///             handlers: AdminServer.Handlers(ready: { await controller.isReady }, status: { await controller.status() }),
///             logger: logger
///         )
///     }
/// }
/// ```
public enum ServiceRunner {
    /// Bootstraps logging and metrics from `options` and returns the process's root logger for `kind`.
    public static func bootstrap(kind: String, options: CommonOptions) -> Logger {
        FloeLogging.bootstrap(level: options.logLevel)
        FloeMetrics.bootstrap()
        var logger = Logger(label: "floe.\(kind)")
        logger[metadataKey: "node.id"] = "\(options.nodeID)"
        logger[metadataKey: "zone"] = "\(options.zone)"
        return logger
    }

    /// Binds the admin server on `options.admin`, then runs it and `services` under one `ServiceGroup` until a signal or a failure.
    ///
    /// Services shut down in reverse order, so the admin server (first) answers probes until the others have drained.
    public static func run(
        services: [any Service],
        options: CommonOptions,
        handlers: AdminServer.Handlers,
        logger: Logger,
        gracefulShutdownTimeout: Duration = .seconds(20)
    ) async throws {
        let admin = try await AdminServer.bind(options.admin, handlers: handlers, logger: logger)
        // Last in the list is the first told to shut down: readiness drops before anything else starts draining.
        try await run(services: [admin] + services + [ReadinessDrop(admin: admin)], logger: logger, gracefulShutdownTimeout: gracefulShutdownTimeout)
    }

    /// Runs `services` under a `ServiceGroup` with graceful shutdown on SIGTERM/SIGINT and cancellation on a repeated signal or timeout.
    public static func run(
        services: [any Service],
        logger: Logger,
        gracefulShutdownTimeout: Duration = .seconds(20)
    ) async throws {
        var configuration = ServiceGroupConfiguration(
            services: services.map {
                ServiceGroupConfiguration.ServiceConfiguration(service: $0, serviceName: String(describing: type(of: $0)))
            },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        configuration.maximumGracefulShutdownDuration = gracefulShutdownTimeout
        let group = ServiceGroup(configuration: configuration)
        try await group.run()
    }
}

/// Flips the admin server to "not ready" as soon as graceful shutdown begins.
struct ReadinessDrop: Service {
    let admin: AdminServer

    func run() async throws {
        try? await gracefulShutdown()
        admin.markDraining()
    }
}
