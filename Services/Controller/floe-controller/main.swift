import ArgumentParser
import ControllerClient
import ControllerCore
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `floe-controller`: one voter of the controller Raft group.
@main
struct FloeController: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floe-controller", abstract: "Floe controller: Raft-replicated cluster metadata in SQLite.")

    @Option(help: "This controller's node id (one of --voters).") var nodeId: Int32
    @Option(help: "Zone label.") var zone = "default"
    @Option(help: "HOST:PORT to listen on for Kafka-framed requests.") var listen: String
    @Option(help: "HOST:PORT other services reach this controller at.") var advertise: String?
    @Option(help: "Static voters: ID@HOST:PORT,…") var voters: String
    @Option(help: "Directory of the SQLite database.") var dataDir: String
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"
    @Option(help: "Fence a registered node after this many ms without a heartbeat.") var sessionTimeoutMs = 6000
    @Option(help: "Lower bound of the Raft election timeout in ms (the upper bound is twice it).") var electionTimeoutMs = 1000

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "floe-controller")
        logger[metadataKey: "zone"] = "\(zone)"
        let listenEndpoint = try parseEndpoint(listen)
        let voterList = try ControllerVoter.parseList(voters)
        guard voterList.contains(where: { $0.id == nodeId }) else {
            throw ValidationError("--node-id \(nodeId) is not in --voters")
        }
        let configuration = ControllerConfiguration(
            nodeId: nodeId, zone: zone, voters: voterList, listenHost: listenEndpoint.host, listenPort: listenEndpoint.port,
            dataDirectory: dataDir, sessionTimeout: .milliseconds(sessionTimeoutMs),
            electionTimeoutMin: .milliseconds(electionTimeoutMs), electionTimeoutMax: .milliseconds(2 * electionTimeoutMs),
            raftHeartbeatInterval: .milliseconds(max(10, electionTimeoutMs / 10)))
        let service = try await ControllerService.start(configuration: configuration, logger: logger)
        let port = try await service.boundPort()
        logger.info("controller started", metadata: ["listen": "\(listen)", "port": "\(port)"])

        let (signals, continuation) = AsyncStream<Int32>.makeStream()
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber)
            source.setEventHandler { continuation.yield(signalNumber) }
            source.resume()
            sources.append(source)
        }
        for await signalNumber in signals {
            logger.info("stopping", metadata: ["signal": "\(signalNumber)"])
            break
        }
        await service.stop(transferLeadership: true)
        for source in sources { source.cancel() }
    }
}
