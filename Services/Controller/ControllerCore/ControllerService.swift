import ClusterMetadata
import ControllerClient
import FloeService
import KafkaProtocol
import KafkaTransport
import Logging
import NIOCore
import Synchronization

/// The APIs a controller answers.
public let controllerAdvertisedVersions = AdvertisedVersions([
    .init(.apiVersions, 0...4),
    .init(.raftMessage, 0...0),
    .init(.controllerWrite, 0...0),
    .init(.controllerRegister, 0...0),
    .init(.controllerHeartbeat, 0...0),
    .init(.fetchMetadata, 0...0),
    .init(.describeController, 0...0),
])

/// Serves the controller's Kafka-framed port.
struct ControllerRequestHandler: KafkaRequestHandler {
    let node: ControllerNode
    let logger: Logger

    static let resolver: KafkaHeaderVersionResolver = controllerAdvertisedVersions.headerVersionResolver

    func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        guard let key = ApiKey(rawValue: request.apiKey) else { return .immediate(.close(reason: "unknown api key \(request.apiKey)")) }
        let node = node
        let version = request.apiVersion
        switch key {
        case .apiVersions:
            let reply = ApiVersionsResponder.respond(version: request.apiVersion, body: request.body, advertised: controllerAdvertisedVersions)
            return .immediate(.respond(body: reply.body, headerVersion: 0))
        case .raftMessage:
            do {
                let envelope = try RaftWire.decode(try request.decode(RaftMessageRequest.self))
                // Handled inside accept so one peer's messages reach Raft in the order they were sent.
                await node.receive(envelope)
                return .immediate(.noResponse)
            } catch {
                return .immediate(.close(reason: "bad raft message: \(error)"))
            }
        case .controllerWrite:
            guard let parsed = try? request.decode(ControllerWriteRequest.self) else {
                return .immediate(.close(reason: "malformed ControllerWrite"))
            }
            return KafkaPendingResponse {
                await Self.write(parsed, node: node).responseAction(version: version)
            }
        case .controllerRegister:
            guard let parsed = try? request.decode(ControllerRegisterRequest.self) else {
                return .immediate(.close(reason: "malformed ControllerRegister"))
            }
            return KafkaPendingResponse {
                await Self.register(parsed, node: node, connection: connection.id).responseAction(version: version)
            }
        case .controllerHeartbeat:
            guard let parsed = try? request.decode(ControllerHeartbeatRequest.self) else {
                return .immediate(.close(reason: "malformed ControllerHeartbeat"))
            }
            return KafkaPendingResponse {
                let (code, fenced) = await node.heartbeat(nodeId: parsed.nodeId, incarnation: parsed.incarnation, connection: connection.id)
                var response = ControllerHeartbeatResponse()
                response.errorCode = code
                response.isFenced = fenced
                await Self.name(leader: await node.currentStatus.leaderId, in: &response, node: node)
                return response.responseAction(version: version)
            }
        case .fetchMetadata:
            guard let parsed = try? request.decode(FetchMetadataRequest.self) else {
                return .immediate(.close(reason: "malformed FetchMetadata"))
            }
            return KafkaPendingResponse {
                let wait = Duration.milliseconds(Int64(min(max(parsed.maxWaitMs, 0), 30_000)))
                let response = await node.fetchMetadata(
                    fromVersion: UInt64(clamping: parsed.fromVersion), maxWait: wait, maxEntries: Int(parsed.maxEntries))
                return response.responseAction(version: version)
            }
        case .describeController:
            return KafkaPendingResponse {
                let status = await node.currentStatus
                var response = DescribeControllerResponse()
                response.nodeId = status.nodeId
                response.role = status.role
                response.term = Int64(clamping: status.term)
                response.leaderId = status.leaderId ?? -1
                response.leaderEndpoint = await node.endpointString(of: status.leaderId)
                response.commitIndex = Int64(clamping: status.commitIndex)
                response.appliedIndex = Int64(clamping: status.appliedIndex)
                response.lastLogIndex = Int64(clamping: status.lastLogIndex)
                return response.responseAction(version: version)
            }
        default:
            return .immediate(.close(reason: "api \(key.name) not served by the controller"))
        }
    }

    func connectionClosed(_ connection: ConnectionInfo) async {
        await node.connectionClosed(connection.id)
    }

    /// NOT_CONTROLLER, naming the leader this node knows of.
    private static func redirect<A: ControllerLeaderAnswer>(_ response: inout A, to leaderId: Int32?, node: ControllerNode) async {
        response.errorCode = notControllerErrorCode
        await name(leader: leaderId, in: &response, node: node)
    }

    /// Names the leader (id and endpoint, or -1 and nil) in an answer.
    private static func name<A: ControllerLeaderAnswer>(leader leaderId: Int32?, in response: inout A, node: ControllerNode) async {
        response.leaderId = leaderId ?? -1
        response.leaderEndpoint = await node.endpointString(of: leaderId)
    }

    private static func timeout(ms: Int32) -> Duration {
        .milliseconds(Int64(min(max(ms, 1), 60_000)))
    }

    static func write(_ request: ControllerWriteRequest, node: ControllerNode) async -> ControllerWriteResponse {
        var response = ControllerWriteResponse()
        let command: MetadataCommand
        do {
            command = try MetadataCommand(decoding: request.command)
        } catch {
            response.errorCode = KafkaErrorCode.invalidRequest.rawValue
            response.errorMessage = "command does not decode: \(error)"
            return response
        }
        let writeId = request.writeId == .zero ? nil : request.writeId
        switch await node.propose(command, writeId: writeId, timeout: timeout(ms: request.timeoutMs)) {
        case let .applied(result, index):
            response.index = Int64(clamping: index)
            response.result = result.encode()
        case let .notLeader(leaderId):
            await redirect(&response, to: leaderId, node: node)
        case .timedOut:
            response.errorCode = KafkaErrorCode.requestTimedOut.rawValue
            response.errorMessage = "not committed within \(request.timeoutMs) ms; it may still commit"
        }
        return response
    }

    static func register(_ request: ControllerRegisterRequest, node: ControllerNode, connection: UInt64? = nil) async -> ControllerRegisterResponse {
        var response = ControllerRegisterResponse()
        response.nodeId = request.nodeId
        guard let kind = NodeKind(rawValue: UInt8(bitPattern: request.kind)) else {
            response.errorCode = KafkaErrorCode.invalidRequest.rawValue
            response.errorMessage = "unknown node kind \(request.kind)"
            return response
        }
        let registration = NodeRegistration(id: request.nodeId, kind: kind, zone: request.zone, listener: request.listener, admin: request.admin)
        let writeId = request.writeId == .zero ? nil : request.writeId
        switch await node.propose(.registerNode(registration), writeId: writeId, timeout: .seconds(5)) {
        case let .applied(result, index):
            switch result {
            case let .nodeRegistered(incarnation):
                response.incarnation = incarnation
                response.metadataVersion = Int64(clamping: index)
                response.sessionTimeoutMs = Int32(clamping: node.configuration.sessionTimeout.components.seconds * 1000
                    + node.configuration.sessionTimeout.components.attoseconds / 1_000_000_000_000_000)
                await node.sessionStarted(nodeId: request.nodeId, connection: connection)
            case let .error(error):
                response.errorCode = error.code
                response.errorMessage = error.message
            default:
                response.errorCode = KafkaErrorCode.unknownServerError.rawValue
            }
        case let .notLeader(leaderId):
            await redirect(&response, to: leaderId, node: node)
        case .timedOut:
            response.errorCode = KafkaErrorCode.requestTimedOut.rawValue
            response.errorMessage = "registration not committed in time"
        }
        return response
    }
}

/// One running controller replica: the Raft driver, its tick timer and its Kafka-framed server.
public final class ControllerService: Sendable {
    /// The Raft driver and metadata state.
    public let node: ControllerNode
    private let server: KafkaServer<ZoneTrafficCountingHandler<ControllerRequestHandler>>
    private let tasks: Mutex<[Task<Void, Never>]>
    private let serverTask: Mutex<Task<Void, any Error>?>
    private let logger: Logger

    private init(node: ControllerNode, server: KafkaServer<ZoneTrafficCountingHandler<ControllerRequestHandler>>, logger: Logger) {
        self.node = node
        self.server = server
        self.logger = logger
        tasks = Mutex([])
        serverTask = Mutex(nil)
    }

    /// Opens the database, binds the listener and starts Raft, timed by `clock`; returns once the port is bound.
    public static func start(
        configuration: ControllerConfiguration, logger: Logger, clock: any ControllerClock = ContinuousControllerClock()
    ) async throws -> ControllerService {
        let node = try await ControllerNode(configuration: configuration, logger: logger, clock: clock)
        let handler = ControllerRequestHandler(node: node, logger: logger)
        let server = KafkaServer(
            configuration: KafkaServerConfiguration(
                host: configuration.listenHost, port: configuration.listenPort,
                headerVersionResolver: ControllerRequestHandler.resolver, shutdownGracePeriod: .seconds(2)),
            handler: ZoneTrafficCountingHandler(handler, traffic: ZoneTraffic(zone: configuration.zone)), logger: logger)
        let service = ControllerService(node: node, server: server, logger: logger)
        let running = Task { try await server.run() }
        service.serverTask.withLock { $0 = running }
        do {
            _ = try await server.boundPort()
        } catch {
            await node.stop()
            throw error
        }
        await node.start()
        let interval = configuration.tickInterval
        let ticker = Task {
            // Ticks when a timer is due rather than every `tickInterval`: an idle controller (a
            // single one, or a follower) wakes a few times a second instead of hundreds.
            while !Task.isCancelled {
                let delay = await node.nextTickDelay(minimum: interval, maximum: .milliseconds(100))
                do { try await clock.sleep(for: delay) } catch { return }
                await node.tick()
            }
        }
        service.tasks.withLock { $0.append(ticker) }
        return service
    }

    /// The port the Kafka-framed server listens on.
    public func boundPort() async throws -> Int {
        try await server.boundPort()
    }

    /// Graceful stop: optionally hands leadership away, stops serving, flushes storage.
    public func stop(transferLeadership: Bool = true) async {
        if transferLeadership { await node.transferLeadership(timeout: .seconds(2)) }
        await node.beginShutdown()
        let running = serverTask.withLock { task -> Task<Void, any Error>? in
            defer { task = nil }
            return task
        }
        running?.cancel()
        _ = try? await running?.value
        let all = tasks.withLock { tasks -> [Task<Void, Never>] in
            defer { tasks.removeAll() }
            return tasks
        }
        for task in all { task.cancel() }
        await node.stop()
    }
}
