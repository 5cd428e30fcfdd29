import ClusterMetadata
import EventLoopTimers
import KafkaProtocol
import KafkaTransport
import Logging

/// Kafka's NOT_CONTROLLER: the request went to a controller that is not the Raft leader.
public let notControllerErrorCode: Int16 = 41

/// Why a controller call failed.
public enum ControllerClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No leader answered before the retry deadline; the last failure is described.
    case unavailable(String)
    /// The leader answered with a Kafka error code (the command may or may not have committed when the code
    /// is REQUEST_TIMED_OUT).
    case server(code: Int16, message: String?)
    /// The response could not be decoded.
    case malformedResponse(String)
    /// An endpoint string is not HOST:PORT.
    case invalidEndpoint(String)

    public var description: String {
        switch self {
        case let .unavailable(reason): "no controller leader available: \(reason)"
        case let .server(code, message): "controller error \(code)\(message.map { ": \($0)" } ?? "")"
        case let .malformedResponse(reason): "malformed controller response: \(reason)"
        case let .invalidEndpoint(text): "invalid endpoint '\(text)' (want HOST:PORT)"
        }
    }
}

/// Parses `HOST:PORT,HOST:PORT,…` (the `--controllers` flag).
public func parseEndpoints(_ text: String) throws(ControllerClientError) -> [KafkaEndpoint] {
    var endpoints: [KafkaEndpoint] = []
    for part in text.split(separator: ",") {
        endpoints.append(try parseEndpoint(String(part)))
    }
    guard !endpoints.isEmpty else { throw .invalidEndpoint(text) }
    return endpoints
}

/// Parses one `HOST:PORT` (the host may be a bracketed IPv6 address).
public func parseEndpoint(_ text: String) throws(ControllerClientError) -> KafkaEndpoint {
    do { return try KafkaEndpoint(parsing: text) } catch { throw .invalidEndpoint(text) }
}

extension String {
    var trimmingSpaces: String {
        var view = Substring(self)
        while view.first == " " { view = view.dropFirst() }
        while view.last == " " { view = view.dropLast() }
        return String(view)
    }
}

/// A node's confirmed registration.
public struct ControllerRegistration: Sendable, Hashable {
    /// The registered node id.
    public var nodeId: NodeID
    /// The incarnation the controller handed out.
    public var incarnation: Int64
    /// Heartbeat at least this often or be fenced.
    public var sessionTimeout: Duration
    /// The metadata version that contains the registration.
    public var metadataVersion: UInt64
}

/// A controller's Raft status as DescribeController reports it.
public struct ControllerStatus: Sendable, Hashable {
    /// The answering controller's id.
    public var nodeId: Int32
    /// follower, preCandidate, candidate or leader.
    public var role: String
    /// Its current term.
    public var term: Int64
    /// The leader it knows of, -1 if none.
    public var leaderId: Int32
    /// That leader's endpoint.
    public var leaderEndpoint: String?
    /// Its commit index.
    public var commitIndex: Int64
    /// Its applied index.
    public var appliedIndex: Int64
}

/// Talks to the controller quorum: finds the leader (following NOT_CONTROLLER hints, retrying across
/// endpoints with backoff), writes commands, registers and heartbeats, fetches metadata.
public actor ControllerClient {
    /// The configured controller endpoints.
    public nonisolated let endpoints: [KafkaEndpoint]
    private let transport: KafkaClient
    /// Heartbeats get a connection of their own: on the shared one their responses would queue behind metadata
    /// long polls (responses come back in request order), stretching the heartbeat interval to the poll's wait.
    private let heartbeatTransport: KafkaClient
    private let logger: Logger
    private let requestTimeout: Duration
    /// Carries the caller's zone (`ClientZone`), so controllers count cross-zone traffic right.
    private let clientId: String
    private let retryDeadline: Duration
    private var leaderHint: KafkaEndpoint?
    private var nextEndpoint = 0

    /// A client for `endpoints`; `retryDeadline` bounds how long one call keeps looking for a leader.
    public init(
        endpoints: [KafkaEndpoint], logger: Logger, transport: KafkaClient? = nil,
        requestTimeout: Duration = .seconds(5), retryDeadline: Duration = .seconds(15), zone: String? = nil
    ) {
        self.clientId = zone.map { ClientZone.tagging("floe-controller-client", zone: $0) } ?? "floe-controller-client"
        self.endpoints = endpoints
        self.logger = logger
        self.transport = transport ?? KafkaClient(logger: logger)
        heartbeatTransport = KafkaClient(logger: logger)
        self.requestTimeout = requestTimeout
        self.retryDeadline = retryDeadline
    }

    /// The leader endpoint this client currently believes in, if any.
    public var currentLeader: KafkaEndpoint? { leaderHint }

    /// Proposes `command` at the leader and returns its result once committed and applied.
    public func write(_ command: MetadataCommand) async throws -> MetadataResult {
        try await writeWithIndex(command).result
    }

    /// Like `write`, also returning the log index (metadata version) the command committed at.
    public func writeWithIndex(_ command: MetadataCommand) async throws -> (result: MetadataResult, index: UInt64) {
        var request = ControllerWriteRequest()
        request.command = command.encode()
        // Every retry below resends this id: if an earlier attempt committed but its answer was lost, the
        // controller answers with that attempt's result instead of applying the command again.
        request.writeId = WriteID.random()
        request.timeoutMs = Int32(clamping: requestTimeout.milliseconds)
        let response = try await leaderCall(request)
        do {
            return (try MetadataResult(decoding: response.result), UInt64(clamping: response.index))
        } catch {
            throw ControllerClientError.malformedResponse("\(error)")
        }
    }

    /// Registers a node and returns its new incarnation.
    public func register(_ registration: NodeRegistration) async throws -> ControllerRegistration {
        var request = ControllerRegisterRequest()
        request.nodeId = registration.id
        request.kind = Int8(registration.kind.rawValue)
        request.zone = registration.zone
        request.listener = registration.listener
        request.admin = registration.admin
        // Resent on every retry below: a registration that committed but whose answer was lost is not applied
        // again, which would hand out a second incarnation and make the first one the retry's answer.
        request.writeId = WriteID.random()
        let response = try await leaderCall(request)
        return ControllerRegistration(
            nodeId: response.nodeId, incarnation: response.incarnation,
            sessionTimeout: .milliseconds(Int64(response.sessionTimeoutMs)), metadataVersion: UInt64(clamping: response.metadataVersion))
    }

    /// Sends one heartbeat; returns whether the node is currently fenced.
    public func heartbeat(nodeId: NodeID, incarnation: Int64, metadataVersion: UInt64) async throws -> Bool {
        var request = ControllerHeartbeatRequest()
        request.nodeId = nodeId
        request.incarnation = incarnation
        request.metadataVersion = Int64(clamping: metadataVersion)
        let response = try await leaderCall(request, via: heartbeatTransport)
        return response.isFenced
    }

    /// Heartbeats every `interval` until the task is cancelled; errors are logged and retried, and
    /// `onError` sees them (STALE_BROKER_EPOCH means the node must register again).
    public func runHeartbeats(
        nodeId: NodeID, incarnation: Int64, interval: Duration,
        metadataVersion: @escaping @Sendable () async -> UInt64,
        onError: @escaping @Sendable (any Error) async -> Void = { _ in }
    ) async {
        let clock = ContinuousClock()
        var next = clock.now
        while !Task.isCancelled {
            do {
                _ = try await heartbeat(nodeId: nodeId, incarnation: incarnation, metadataVersion: await metadataVersion())
            } catch is CancellationError {
                return
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
                await onError(error)
            }
            next = next.advanced(by: interval)
            if next < clock.now { next = clock.now }
            do { try await LoopTimers.sleep(until: next) } catch { return }
        }
    }

    /// Asks one specific controller for its status.
    public func describe(_ endpoint: KafkaEndpoint) async throws -> ControllerStatus {
        let response = try await send(DescribeControllerRequest(), to: endpoint, timeout: requestTimeout)
        return ControllerStatus(
            nodeId: response.nodeId, role: response.role, term: response.term, leaderId: response.leaderId,
            leaderEndpoint: response.leaderEndpoint, commitIndex: response.commitIndex, appliedIndex: response.appliedIndex)
    }

    /// One FetchMetadata call to `endpoint` (any controller serves it).
    public func fetchMetadata(from endpoint: KafkaEndpoint, fromVersion: UInt64, maxWait: Duration, maxEntries: Int32 = 1000) async throws -> FetchMetadataResponse {
        var request = FetchMetadataRequest()
        request.fromVersion = Int64(clamping: fromVersion)
        request.maxWaitMs = Int32(clamping: maxWait.milliseconds)
        request.maxEntries = maxEntries
        return try await send(request, to: endpoint, timeout: maxWait + requestTimeout)
    }

    /// Closes every connection.
    public func close() async {
        await transport.closeAll()
        await heartbeatTransport.closeAll()
    }

    // MARK: Leader discovery

    private func leaderCall<R: KafkaRequest>(_ request: R, via client: KafkaClient? = nil) async throws -> R.Response
    where R.Response: ControllerLeaderAnswer {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: retryDeadline)
        var backoff = Duration.milliseconds(5)
        var lastFailure = "no attempt"
        var attempts = 0
        var hintsFollowed = 0
        while clock.now < deadline, attempts < 10_000 {
            attempts += 1
            try Task.checkCancellation()
            let endpoint = pickEndpoint()
            do {
                let response = try await send(request, to: endpoint, timeout: requestTimeout, via: client)
                if response.errorCode == 0 {
                    leaderHint = endpoint
                    return response
                }
                guard response.errorCode == notControllerErrorCode else {
                    throw ControllerClientError.server(code: response.errorCode, message: response.errorMessage)
                }
                lastFailure = "\(endpoint) is not the controller leader"
                if let leader = response.leaderEndpoint, let hinted = try? parseEndpoint(leader), hinted != endpoint, hintsFollowed < 3 {
                    // A hint to a different node is worth following right away, but not forever: two nodes with
                    // stale views could point at each other.
                    hintsFollowed += 1
                    leaderHint = hinted
                    continue
                }
                leaderHint = nil
            } catch let error as ControllerClientError {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                lastFailure = "\(endpoint): \(error)"
                if leaderHint == endpoint { leaderHint = nil }
            }
            hintsFollowed = 0
            try await LoopTimers.sleep(for: backoff)
            backoff = min(backoff * 2, .milliseconds(200))
        }
        throw ControllerClientError.unavailable(lastFailure)
    }

    private func pickEndpoint() -> KafkaEndpoint {
        if let leaderHint { return leaderHint }
        let endpoint = endpoints[nextEndpoint % endpoints.count]
        nextEndpoint &+= 1
        return endpoint
    }

    private func send<R: KafkaRequest>(
        _ request: R, to endpoint: KafkaEndpoint, timeout: Duration, via client: KafkaClient? = nil
    ) async throws -> R.Response {
        do {
            return try await (client ?? transport).send(request, version: 0, to: endpoint, clientId: clientId, timeout: timeout)
        } catch let error as KafkaResponseDecodingError {
            throw ControllerClientError.malformedResponse(error.description)
        }
    }
}

extension Duration {
    /// Whole milliseconds, clamped at zero.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return max(0, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}
