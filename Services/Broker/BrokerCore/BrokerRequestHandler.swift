import ClusterMetadata
import KafkaProtocol
import KafkaTransport
import Logging
import NIOCore

/// The APIs a broker answers, at the versions it implements (see `AdvertisedVersions.floe`).
public let brokerAdvertisedVersions = AdvertisedVersions(
    AdvertisedVersions.floe.restricted(to: BrokerRequestHandler.implemented).entries + [
        .init(.alterPartitionReassignments, 0...0),
        .init(.listPartitionReassignments, 0...0),
    ])

/// Serves the Kafka listener of a broker: decodes each request, runs its handler, encodes the answer.
public struct BrokerRequestHandler: KafkaRequestHandler {
    /// API keys with handlers (reassignment APIs are added separately: `AdvertisedVersions.floe` does not list them).
    public static let implemented: Set<ApiKey> = [
        .apiVersions, .metadata, .produce, .fetch, .listOffsets, .offsetForLeaderEpoch, .deleteRecords,
        .createTopics, .deleteTopics, .createPartitions, .describeConfigs, .alterConfigs, .incrementalAlterConfigs,
        .describeCluster, .initProducerId,
        .findCoordinator, .joinGroup, .syncGroup, .heartbeat, .leaveGroup, .offsetCommit, .offsetFetch, .offsetDelete,
        .listGroups, .describeGroups, .deleteGroups,
    ]

    let context: BrokerContext
    let admin: AdminHandlers
    let producerIds: ProducerIdAllocator
    let groups: GroupCoordinator?

    /// Without `groups` the group APIs close the connection (handlers that serve no groups, in tests).
    public init(context: BrokerContext, admin: AdminHandlers, producerIds: ProducerIdAllocator, groups: GroupCoordinator? = nil) {
        self.context = context
        self.admin = admin
        self.producerIds = producerIds
        self.groups = groups
    }

    /// Request header versions of the implemented APIs; anything else closes the connection
    /// (ApiVersions answers at every version, as Kafka requires).
    public static let resolver: KafkaHeaderVersionResolver = { apiKey, version in
        guard let key = ApiKey(rawValue: apiKey) else { return nil }
        if key == .apiVersions { return key.requestHeaderVersion(min(max(version, 0), 4)) }
        guard brokerAdvertisedVersions.isSupported(key, version) else { return nil }
        return key.requestHeaderVersion(version)
    }

    public func accept(_ request: KafkaRequestFrame, connection: ConnectionInfo) async -> KafkaPendingResponse {
        guard let key = ApiKey(rawValue: request.apiKey) else { return .immediate(.close(reason: "unknown api key \(request.apiKey)")) }
        BrokerMetrics.requests[key]?.increment()
        let version = request.apiVersion
        let context = context
        let admin = admin
        // Everything but ApiVersions waits (at startup only) until this broker can list itself.
        if key != .apiVersions { await context.waitUntilListed() }
        switch key {
        case .apiVersions:
            let reply = ApiVersionsResponder.respond(version: version, body: request.body, advertised: brokerAdvertisedVersions)
            return .immediate(.respond(body: reply.body, headerVersion: 0))
        case .produce:
            guard let parsed: ProduceRequest = decode(request) else { return malformed(key, version) }
            return await Produce.accept(parsed, version: version, context: context)
        case .metadata:
            return later(request, key) { (parsed: MetadataRequest) in await MetadataHandler.handle(parsed, version: version, context: context) }
        case .fetch:
            return later(request, key) { (parsed: FetchRequest) in await Fetch.handle(parsed, version: version, context: context) }
        case .listOffsets:
            return later(request, key) { (parsed: ListOffsetsRequest) in await ListOffsets.handle(parsed, version: version, context: context) }
        case .offsetForLeaderEpoch:
            return later(request, key) { (parsed: OffsetForLeaderEpochRequest) in
                await OffsetForLeaderEpoch.handle(parsed, version: version, context: context)
            }
        case .deleteRecords:
            return later(request, key) { (parsed: DeleteRecordsRequest) in await DeleteRecords.handle(parsed, version: version, context: context) }
        case .initProducerId:
            let producerIds = producerIds
            return later(request, key) { (parsed: InitProducerIdRequest) in
                await InitProducerId.handle(parsed, version: version, allocator: producerIds)
            }
        case .createTopics:
            return later(request, key) { (parsed: CreateTopicsRequest) in await admin.createTopics(parsed, version: version) }
        case .deleteTopics:
            return later(request, key) { (parsed: DeleteTopicsRequest) in await admin.deleteTopics(parsed, version: version) }
        case .createPartitions:
            return later(request, key) { (parsed: CreatePartitionsRequest) in await admin.createPartitions(parsed, version: version) }
        case .describeConfigs:
            return later(request, key) { (parsed: DescribeConfigsRequest) in await admin.describeConfigs(parsed, version: version) }
        case .alterConfigs:
            return later(request, key) { (parsed: AlterConfigsRequest) in await admin.alterConfigs(parsed, version: version) }
        case .incrementalAlterConfigs:
            return later(request, key) { (parsed: IncrementalAlterConfigsRequest) in await admin.incrementalAlterConfigs(parsed, version: version) }
        case .describeCluster:
            return later(request, key) { (parsed: DescribeClusterRequest) in await admin.describeCluster(parsed, version: version) }
        case .alterPartitionReassignments:
            return later(request, key) { (parsed: AlterPartitionReassignmentsRequest) in
                await admin.alterPartitionReassignments(parsed, version: version)
            }
        case .listPartitionReassignments:
            return later(request, key) { (parsed: ListPartitionReassignmentsRequest) in
                await admin.listPartitionReassignments(parsed, version: version)
            }
        case .findCoordinator:
            return later(request, key) { (parsed: FindCoordinatorRequest) in
                await GroupHandlers.findCoordinator(parsed, version: version, context: context)
            }
        case .joinGroup, .syncGroup, .heartbeat, .leaveGroup, .offsetCommit, .offsetFetch, .offsetDelete, .listGroups, .describeGroups,
            .deleteGroups:
            guard let groups else { return .immediate(.close(reason: "api \(key) needs a group coordinator")) }
            return groupRequest(request, key, connection: connection, groups: groups)
        default:
            return .immediate(.close(reason: "api \(key) is not served by brokers"))
        }
    }

    private func groupRequest(_ request: KafkaRequestFrame, _ key: ApiKey, connection: ConnectionInfo, groups: GroupCoordinator) -> KafkaPendingResponse {
        let version = request.apiVersion
        let context = context
        switch key {
        case .joinGroup:
            let clientId = request.clientId
            // Kafka shows member hosts as "/address".
            let clientHost = connection.remoteAddress?.ipAddress.map { "/\($0)" } ?? ""
            return later(request, key) { (parsed: JoinGroupRequest) in
                await GroupHandlers.joinGroup(parsed, version: version, coordinator: groups, clientId: clientId, clientHost: clientHost)
            }
        case .syncGroup:
            return later(request, key) { (parsed: SyncGroupRequest) in await GroupHandlers.syncGroup(parsed, version: version, coordinator: groups) }
        case .heartbeat:
            return later(request, key) { (parsed: HeartbeatRequest) in await GroupHandlers.heartbeat(parsed, version: version, coordinator: groups) }
        case .leaveGroup:
            return later(request, key) { (parsed: LeaveGroupRequest) in await GroupHandlers.leaveGroup(parsed, version: version, coordinator: groups) }
        case .offsetCommit:
            return later(request, key) { (parsed: OffsetCommitRequest) in
                await GroupHandlers.offsetCommit(parsed, version: version, coordinator: groups, context: context)
            }
        case .offsetFetch:
            return later(request, key) { (parsed: OffsetFetchRequest) in await GroupHandlers.offsetFetch(parsed, version: version, coordinator: groups) }
        case .offsetDelete:
            return later(request, key) { (parsed: OffsetDeleteRequest) in await GroupHandlers.offsetDelete(parsed, version: version, coordinator: groups) }
        case .listGroups:
            return later(request, key) { (parsed: ListGroupsRequest) in await GroupHandlers.listGroups(parsed, version: version, coordinator: groups) }
        case .describeGroups:
            return later(request, key) { (parsed: DescribeGroupsRequest) in
                await GroupHandlers.describeGroups(parsed, version: version, coordinator: groups)
            }
        case .deleteGroups:
            return later(request, key) { (parsed: DeleteGroupsRequest) in await GroupHandlers.deleteGroups(parsed, version: version, coordinator: groups) }
        default:
            return .immediate(.close(reason: "api \(key) is not a group api"))
        }
    }

    /// Produce, once this broker is listed, when the connection runs on the replica manager's loop: checked,
    /// given offsets and sent to the WAL writer without a task, answered from the WAL's callback.
    public func acceptOnLoop(_ request: KafkaRequestFrame, connection: ConnectionInfo) -> KafkaPendingResponse? {
        guard request.apiKey == ApiKey.produce.rawValue, context.isListed, context.replicas.eventLoop.inEventLoop else { return nil }
        BrokerMetrics.requests[.produce]?.increment()
        guard let parsed: ProduceRequest = decode(request) else { return malformed(.produce, request.apiVersion) }
        return Produce.acceptOnLoop(parsed, version: request.apiVersion, context: context)
    }

    private func decode<Request: KafkaStruct>(_ request: KafkaRequestFrame) -> Request? {
        var body = request.body
        return try? Request(from: &body, version: request.apiVersion)
    }

    private func malformed(_ key: ApiKey, _ version: Int16) -> KafkaPendingResponse {
        context.logger.warning("malformed request; closing the connection", metadata: ["kafka.api_key": "\(key)", "kafka.api_version": "\(version)"])
        return .immediate(.close(reason: "malformed \(key) v\(version)"))
    }

    /// Decodes now (in arrival order) and computes the answer concurrently with later requests.
    private func later<Request: KafkaStruct, Response: KafkaStruct>(
        _ request: KafkaRequestFrame, _ key: ApiKey, _ handle: @escaping @Sendable (Request) async -> Response
    ) -> KafkaPendingResponse {
        guard let parsed: Request = decode(request) else { return malformed(key, request.apiVersion) }
        let version = request.apiVersion
        let logger = context.logger
        return KafkaPendingResponse {
            let response = await handle(parsed)
            return encode(response, key: key, version: version, logger: logger)
        }
    }
}

/// Encodes a response at `version`; a response the version cannot carry closes the connection
/// (a handler bug, logged) rather than sending bytes the client would misread.
func encode<Response: KafkaStruct>(_ response: Response, key: ApiKey, version: Int16, logger: Logger) -> KafkaResponseAction {
    var body = ByteBuffer()
    do {
        try response.encode(to: &body, version: version)
    } catch {
        logger.error("cannot encode response", metadata: ["kafka.api_key": "\(key)", "kafka.api_version": "\(version)", "error": "\(error)"])
        return .close(reason: "cannot encode \(key) v\(version) response: \(error)")
    }
    return .respond(body: body, headerVersion: key.responseHeaderVersion(version))
}
