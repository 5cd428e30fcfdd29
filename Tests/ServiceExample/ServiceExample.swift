import ArgumentParser
import FloeService
import Foundation
import Logging
import ServiceLifecycle

/// A stand-in service with the real Operations-surface flags, for supervisor and lifecycle tests.
@main
struct ServiceExample: AsyncParsableCommand {
    @OptionGroup var common: CommonOptions

    @Option(help: "Accepted like a real service's; unused.")
    var controllers: String?

    @Option(help: "Accepted like a controller's; reported in /status.")
    var voters: String?

    @Option(name: .customLong("data-dir"))
    var dataDir: String?

    @Option
    var volume: String?

    @Option(name: .customLong("object-store"))
    var objectStore: String?

    @Option(name: .customLong("kind"), help: "Kind reported in /status.")
    var kind: String = "example"

    static func main() async {
        await mainWithEnvironment()
    }

    func run() async throws {
        let logger = ServiceRunner.bootstrap(kind: kind, options: common)
        let common = self.common
        let kind = self.kind
        let voters = self.voters ?? ""
        try await ServiceRunner.run(
            services: [DrainOnShutdown(logger: logger)],
            options: common,
            handlers: AdminServer.Handlers(
                ready: { true },
                status: {
                    ServiceStatus(
                        nodeID: common.nodeID, kind: kind, zone: common.zone, incarnation: 1,
                        details: ["role": "example", "voters": voters, "listen": common.advertised.description]
                    )
                }
            ),
            logger: logger
        )
        logger.info("drained, exiting")
    }
}

/// Runs until graceful shutdown, then logs that it drained.
struct DrainOnShutdown: Service {
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        logger.info("graceful shutdown: draining")
    }
}
