import ArgumentParser
import FloeService

/// The `floe` command: local clusters, admin and benchmarks.
@main
struct Floe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floe",
        abstract: "Floe: a diskless, Kafka-compatible streaming cluster.",
        subcommands: [Dev.self, Admin.self, Bench.self]
    )

    static func main() async {
        do {
            var command = try parseAsRoot()
            // The load generator measures latency: its own hand-offs should cost as little as the services'.
            FloeRuntime.runTasksOnEventLoops(loops: (command as? any EventLoopSizing)?.eventLoops)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// `floe bench …`: measurements whose output goes into BENCHMARKS.md.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a benchmark and print its configuration and results.",
        subcommands: [BenchCodec.self, BenchProtocol.self, BenchWAL.self, BenchController.self, BenchProduce.self, BenchFailover.self, BenchCompaction.self]
    )
}
