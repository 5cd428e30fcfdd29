import ClusterMetadata
import KafkaProtocol

extension AdminHandlers {
    /// Every operation Kafka defines on the cluster resource (CREATE, ALTER, DESCRIBE, CLUSTER_ACTION,
    /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE) as an AclOperation bit set: without an
    /// authorizer every client may do all of them.
    static let clusterAuthorizedOperations: Int32 = [5, 7, 8, 9, 10, 11, 12].reduce(0) { $0 | (1 << $1) }

    /// DescribeCluster (v0-1): the active brokers and, as a KRaft broker reports it, a live broker as controller.
    public func describeCluster(_ request: DescribeClusterRequest, version: Int16) async -> DescribeClusterResponse {
        var response = DescribeClusterResponse()
        response.errorMessage = nil
        if version >= 1, request.endpointType != 1 {
            // 1 = brokers; 2 = controllers, which clients must ask on a controller endpoint.
            if request.endpointType == 2 {
                response.errorCode = KafkaErrorCode.mismatchedEndpointType.rawValue
                response.errorMessage = "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER"
            } else {
                response.errorCode = KafkaErrorCode.unsupportedEndpointType.rawValue
                response.errorMessage = "Unsupported endpoint type \(request.endpointType)"
            }
            return response
        }
        let state = await metadata.state
        response.clusterId = settings.clusterId
        var brokers: [DescribeClusterResponse.DescribeClusterBroker] = []
        for node in state.activeBrokers {
            guard let (host, port) = Self.splitListener(node.registration.listener) else {
                logger.warning(
                    "broker listener is not HOST:PORT; left out of DescribeCluster",
                    metadata: ["node.id": "\(node.id)", "listener": "\(node.registration.listener)"])
                continue
            }
            var broker = DescribeClusterResponse.DescribeClusterBroker()
            broker.brokerId = node.id
            broker.host = host
            broker.port = port
            broker.rack = node.zone.isEmpty ? nil : node.zone
            brokers.append(broker)
        }
        response.brokers = brokers
        // Controller-bound admin requests work on any broker, so this broker names itself when it is live.
        if brokers.contains(where: { $0.brokerId == settings.nodeId }) {
            response.controllerId = settings.nodeId
        } else {
            response.controllerId = brokers.first?.brokerId ?? settings.nodeId
        }
        if request.includeClusterAuthorizedOperations {
            response.clusterAuthorizedOperations = Self.clusterAuthorizedOperations
        }
        return response
    }

    /// Splits "host:port" or "[v6addr]:port".
    static func splitListener(_ listener: String) -> (String, Int32)? {
        guard let colon = listener.lastIndex(of: ":") else { return nil }
        var host = String(listener[..<colon])
        guard let port = Int32(listener[listener.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}
