import ClusterMetadata
import KafkaProtocol
import Logging

/// Topic and config administration (being written; every call answers an empty response until then).
public struct AdminHandlers: Sendable {
    public init(settings: BrokerSettings, writer: any MetadataWriter, metadata: any MetadataSource, now: @escaping @Sendable () -> Int64, logger: Logger) {}
    public func createTopics(_ request: CreateTopicsRequest, version: Int16) async -> CreateTopicsResponse { CreateTopicsResponse() }
    public func deleteTopics(_ request: DeleteTopicsRequest, version: Int16) async -> DeleteTopicsResponse { DeleteTopicsResponse() }
    public func createPartitions(_ request: CreatePartitionsRequest, version: Int16) async -> CreatePartitionsResponse { CreatePartitionsResponse() }
    public func describeConfigs(_ request: DescribeConfigsRequest, version: Int16) async -> DescribeConfigsResponse { DescribeConfigsResponse() }
    public func alterConfigs(_ request: AlterConfigsRequest, version: Int16) async -> AlterConfigsResponse { AlterConfigsResponse() }
    public func incrementalAlterConfigs(_ request: IncrementalAlterConfigsRequest, version: Int16) async -> IncrementalAlterConfigsResponse { IncrementalAlterConfigsResponse() }
    public func describeCluster(_ request: DescribeClusterRequest, version: Int16) async -> DescribeClusterResponse { DescribeClusterResponse() }
    public func alterPartitionReassignments(_ request: AlterPartitionReassignmentsRequest, version: Int16) async -> AlterPartitionReassignmentsResponse { AlterPartitionReassignmentsResponse() }
    public func listPartitionReassignments(_ request: ListPartitionReassignmentsRequest, version: Int16) async -> ListPartitionReassignmentsResponse { ListPartitionReassignmentsResponse() }
    public func autoCreate(topics: [String]) async -> [String: Int16] { [:] }
}
