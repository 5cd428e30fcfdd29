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
        .listGroups, .describeGroups, .deleteGroups, .consumerGroupHeartbeat, .consumerGroupDescribe,
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
    /// RoutedClaim (brokers' own call for zone routing) is served but not advertised to clients.
    public static let resolver: KafkaHeaderVersionResolver =
        AdvertisedVersions(brokerAdvertisedVersions.entries + [.init(.routedClaim, 0...0)]).headerVersionResolver

    /// Every API follows one convention, so a new one is a line here and a file under Handlers/ (or Groups/):
    ///
    /// - The request is decoded here, in arrival order, as the generated type its api key names; a body that
    ///   does not decode closes the connection (logged).
    /// - The handler is `(Request, version, what it needs) async -> Request.Response`: a static func of the API's
    ///   enum taking `BrokerContext` (or the one part it needs: the group coordinator, the producer id
    ///   allocator), or a method of `AdminHandlers` for the APIs that write metadata. It never throws and never
    ///   closes: every failure is an error code in the response, per item where the API has items.
    /// - The response is encoded here at the request's version (`encode`); one the version cannot carry closes
    ///   the connection (a handler bug, logged).
    /// - Handlers run concurrently with later requests of the connection (`serve`). Only Produce has an
    ///   order-sensitive part (offsets are assigned and appends queued in arrival order), so it returns its own
    ///   `KafkaPendingResponse` from `Produce.accept` and encodes through the same `encode`.
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
            let zone = ClientZone.of(request.clientId, fallback: context.settings.zone)
            return serve(request, MetadataRequest.self) { parsed in
                await MetadataHandler.handle(parsed, version: version, context: context, clientZone: zone)
            }
        case .fetch:
            return serve(request, FetchRequest.self) { parsed in await Fetch.handle(parsed, version: version, context: context) }
        case .listOffsets:
            return serve(request, ListOffsetsRequest.self) { parsed in await ListOffsets.handle(parsed, version: version, context: context) }
        case .offsetForLeaderEpoch:
            return serve(request, OffsetForLeaderEpochRequest.self) { parsed in
                await OffsetForLeaderEpoch.handle(parsed, version: version, context: context)
            }
        case .deleteRecords:
            return serve(request, DeleteRecordsRequest.self) { parsed in await DeleteRecords.handle(parsed, version: version, context: context) }
        case .initProducerId:
            let producerIds = producerIds
            return serve(request, InitProducerIdRequest.self) { parsed in
                await InitProducerId.handle(parsed, version: version, allocator: producerIds)
            }
        case .createTopics:
            return serve(request, CreateTopicsRequest.self) { parsed in await admin.createTopics(parsed, version: version) }
        case .deleteTopics:
            return serve(request, DeleteTopicsRequest.self) { parsed in await admin.deleteTopics(parsed, version: version) }
        case .createPartitions:
            return serve(request, CreatePartitionsRequest.self) { parsed in await admin.createPartitions(parsed, version: version) }
        case .describeConfigs:
            return serve(request, DescribeConfigsRequest.self) { parsed in await admin.describeConfigs(parsed, version: version) }
        case .alterConfigs:
            return serve(request, AlterConfigsRequest.self) { parsed in await admin.alterConfigs(parsed, version: version) }
        case .incrementalAlterConfigs:
            return serve(request, IncrementalAlterConfigsRequest.self) { parsed in await admin.incrementalAlterConfigs(parsed, version: version) }
        case .describeCluster:
            return serve(request, DescribeClusterRequest.self) { parsed in await admin.describeCluster(parsed, version: version) }
        case .alterPartitionReassignments:
            return serve(request, AlterPartitionReassignmentsRequest.self) { parsed in
                await admin.alterPartitionReassignments(parsed, version: version)
            }
        case .listPartitionReassignments:
            return serve(request, ListPartitionReassignmentsRequest.self) { parsed in
                await admin.listPartitionReassignments(parsed, version: version)
            }
        case .routedClaim:
            guard let claims = context.claims else { return .immediate(.close(reason: "zone routing is off on this broker")) }
            return serve(request, RoutedClaimRequest.self) { parsed in await claims.handle(parsed, context: context) }
        case .findCoordinator:
            let zone = ClientZone.of(request.clientId, fallback: context.settings.zone)
            return serve(request, FindCoordinatorRequest.self) { parsed in
                await GroupHandlers.findCoordinator(parsed, version: version, context: context, clientZone: zone)
            }
        case .joinGroup, .syncGroup, .heartbeat, .leaveGroup, .offsetCommit, .offsetFetch, .offsetDelete, .listGroups, .describeGroups,
            .deleteGroups, .consumerGroupHeartbeat, .consumerGroupDescribe:
            guard let groups else { return .immediate(.close(reason: "api \(key) needs a group coordinator")) }
            if let forwarded = await GroupForwarding.forward(request, key, connection: connection, context: context) { return forwarded }
            return groupRequest(request, key, connection: connection, groups: groups)
        default:
            return .immediate(.close(reason: "api \(key) is not served by brokers"))
        }
    }

    public func connectionClosed(_ connection: ConnectionInfo) async {
        await context.router?.forwarder.clientClosed(connection.id)
    }

    /// A group member's host as Kafka shows it: "/address".
    static func memberHost(_ connection: ConnectionInfo) -> String {
        connection.remoteAddress?.ipAddress.map { "/\($0)" } ?? ""
    }

    private func groupRequest(_ request: KafkaRequestFrame, _ key: ApiKey, connection: ConnectionInfo, groups: GroupCoordinator) -> KafkaPendingResponse {
        let version = request.apiVersion
        let context = context
        switch key {
        case .joinGroup:
            let clientId = request.clientId
            let clientHost = Self.memberHost(connection)
            return serve(request, JoinGroupRequest.self) { parsed in
                await GroupHandlers.joinGroup(parsed, version: version, coordinator: groups, clientId: clientId, clientHost: clientHost)
            }
        case .syncGroup:
            return serve(request, SyncGroupRequest.self) { parsed in await GroupHandlers.syncGroup(parsed, version: version, coordinator: groups) }
        case .heartbeat:
            return serve(request, HeartbeatRequest.self) { parsed in await GroupHandlers.heartbeat(parsed, version: version, coordinator: groups) }
        case .leaveGroup:
            return serve(request, LeaveGroupRequest.self) { parsed in await GroupHandlers.leaveGroup(parsed, version: version, coordinator: groups) }
        case .offsetCommit:
            return serve(request, OffsetCommitRequest.self) { parsed in
                await GroupHandlers.offsetCommit(parsed, version: version, coordinator: groups, context: context)
            }
        case .offsetFetch:
            return serve(request, OffsetFetchRequest.self) { parsed in await GroupHandlers.offsetFetch(parsed, version: version, coordinator: groups) }
        case .offsetDelete:
            return serve(request, OffsetDeleteRequest.self) { parsed in await GroupHandlers.offsetDelete(parsed, version: version, coordinator: groups) }
        case .listGroups:
            return serve(request, ListGroupsRequest.self) { parsed in await GroupHandlers.listGroups(parsed, version: version, coordinator: groups) }
        case .describeGroups:
            return serve(request, DescribeGroupsRequest.self) { parsed in
                await GroupHandlers.describeGroups(parsed, version: version, coordinator: groups)
            }
        case .deleteGroups:
            return serve(request, DeleteGroupsRequest.self) { parsed in await GroupHandlers.deleteGroups(parsed, version: version, coordinator: groups) }
        case .consumerGroupHeartbeat:
            let (clientId, clientHost) = (request.clientId, Self.memberHost(connection))
            return serve(request, ConsumerGroupHeartbeatRequest.self) { parsed in
                await ConsumerGroupHandlers.heartbeat(parsed, version: version, coordinator: groups, clientId: clientId, clientHost: clientHost)
            }
        case .consumerGroupDescribe:
            return serve(request, ConsumerGroupDescribeRequest.self) { parsed in
                await ConsumerGroupHandlers.describe(parsed, version: version, coordinator: groups)
            }
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

    private func decode<Request: KafkaRequest>(_ request: KafkaRequestFrame) -> Request? {
        try? request.decode(Request.self)
    }

    private func malformed(_ key: ApiKey, _ version: Int16) -> KafkaPendingResponse {
        context.logger.warning("malformed request; closing the connection", metadata: ["kafka.api_key": "\(key)", "kafka.api_version": "\(version)"])
        return .immediate(.close(reason: "malformed \(key) v\(version)"))
    }

    /// Decodes now (in arrival order) and computes the answer concurrently with later requests.
    private func serve<Request: KafkaRequest>(
        _ request: KafkaRequestFrame, _: Request.Type, _ handle: @escaping @Sendable (Request) async -> Request.Response
    ) -> KafkaPendingResponse {
        guard let parsed: Request = decode(request) else { return malformed(Request.apiKey, request.apiVersion) }
        let version = request.apiVersion
        let logger = context.logger
        return KafkaPendingResponse { encode(await handle(parsed), version: version, logger: logger) }
    }
}

/// Encodes a response at `version` (see `KafkaResponse.responseAction`), logging one the version cannot carry.
func encode<Response: KafkaResponse>(_ response: Response, version: Int16, logger: Logger) -> KafkaResponseAction {
    let action = response.responseAction(version: version)
    if case .close(let reason) = action {
        logger.error("cannot encode response", metadata: ["kafka.api_key": "\(Response.apiKey)", "kafka.api_version": "\(version)", "error": "\(reason)"])
    }
    return action
}
