import ClusterMetadata
import ControllerClient
import KafkaProtocol
import KafkaTransport
import NIOCore

/// Group requests of a client whose coordinator is in another zone (zone routing). FindCoordinator
/// named a broker of the client's zone, so the client's connections, and the Metadata answers it
/// gets on them, stay in its zone; that broker forwards the group's requests, byte for byte, to the
/// real coordinator and relays the answers. Only this control traffic crosses zones.
///
/// Each client connection gets its own connection to each coordinator it reaches (`ZoneForwarder`),
/// opened before its request is queued, so a client's requests reach the coordinator in the order it
/// sent them and one client's long JoinGroup never holds up another's heartbeats.
enum GroupForwarding {
    /// Long enough for a JoinGroup that waits out a rebalance (Kafka's default max.poll.interval.ms is 5 minutes).
    static let timeout = Duration.seconds(330)

    /// The forwarded answer, or nil to serve the request here.
    static func forward(
        _ request: KafkaRequestFrame, _ key: ApiKey, connection: ConnectionInfo, context: BrokerContext
    ) async -> KafkaPendingResponse? {
        guard let forwarder = context.router?.forwarder, let group = groupId(of: request, key) else { return nil }
        let state = context.replicas.latestState
        guard let topic = state.topics[CoordinatorPlacement.offsetsTopic], !topic.partitions.isEmpty else { return nil }
        let partition = Int(CoordinatorPlacement.partition(for: group, partitionCount: Int32(clamping: topic.partitions.count)))
        let leader = topic.partitions[partition].leader
        guard leader != context.settings.nodeId, let node = state.nodes[leader], node.state == .active, node.zone != context.settings.zone else {
            return nil
        }
        let clientId = ClientZone.tagging(request.clientId, zone: ClientZone.of(request.clientId, fallback: context.settings.zone))
        let headerVersion = key.responseHeaderVersion(request.apiVersion)
        let upstream: KafkaConnection
        do {
            upstream = try await forwarder.connection(for: connection.id, to: leader)
        } catch {
            context.logger.info("cannot reach a group coordinator", metadata: ["coordinator": "\(leader)", "error": "\(error)"])
            return .immediate(.close(reason: "coordinator \(leader) unreachable: \(error)"))
        }
        let answered = upstream.enqueue(
            apiKey: request.apiKey, apiVersion: request.apiVersion, headerVersion: request.headerVersion,
            responseHeaderVersion: headerVersion, clientId: clientId, body: request.body, timeout: timeout)
        // A failure closes the client's connection; it reconnects and asks FindCoordinator again.
        return KafkaPendingResponse(future: answered.map { .respond(body: $0, headerVersion: headerVersion) })
    }

    /// The one group a request is for; nil for requests that name none or several.
    static func groupId(of request: KafkaRequestFrame, _ key: ApiKey) -> String? {
        switch key {
        case .joinGroup: return (try? request.decode(JoinGroupRequest.self))?.groupId
        case .syncGroup: return (try? request.decode(SyncGroupRequest.self))?.groupId
        case .heartbeat: return (try? request.decode(HeartbeatRequest.self))?.groupId
        case .leaveGroup: return (try? request.decode(LeaveGroupRequest.self))?.groupId
        case .offsetCommit: return (try? request.decode(OffsetCommitRequest.self))?.groupId
        case .offsetDelete: return (try? request.decode(OffsetDeleteRequest.self))?.groupId
        case .consumerGroupHeartbeat: return (try? request.decode(ConsumerGroupHeartbeatRequest.self))?.groupId
        case .offsetFetch:
            guard let parsed = try? request.decode(OffsetFetchRequest.self) else { return nil }
            if request.apiVersion < 8 { return parsed.groupId }
            return parsed.groups.count == 1 ? parsed.groups[0].groupId : nil
        default: return nil
        }
    }
}

/// Connections to other brokers per client connection, closed with it.
public actor ZoneForwarder {
    private let metadata: any MetadataSource
    private var connections: [UInt64: [NodeID: KafkaConnection]] = [:]

    init(metadata: any MetadataSource) {
        self.metadata = metadata
    }

    /// The live connection for client connection `client` to broker `node`, opened if needed.
    func connection(for client: UInt64, to node: NodeID) async throws -> KafkaConnection {
        if let existing = connections[client]?[node], existing.isActive { return existing }
        let state = await metadata.state
        guard let record = state.nodes[node], record.state == .active else { throw RoutingError("broker \(node) is not active") }
        let endpoint = try parseEndpoint(record.registration.listener)
        let opened = try await KafkaConnection.connect(host: endpoint.host, port: endpoint.port)
        if let raced = connections[client]?[node], raced.isActive {
            await opened.close()
            return raced
        }
        connections[client, default: [:]][node] = opened
        return opened
    }

    /// The client connection ended: its forwarded connections close too.
    public func clientClosed(_ client: UInt64) async {
        guard let open = connections.removeValue(forKey: client) else { return }
        for connection in open.values { await connection.close() }
    }

    func closeAll() async {
        let all = connections
        connections.removeAll()
        for open in all.values { for connection in open.values { await connection.close() } }
    }
}
