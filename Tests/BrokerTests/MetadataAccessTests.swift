import BrokerCore
import ClusterMetadata
import Testing

@Suite struct MetadataAccessTests {
    @Test func placeholderTargetBuilds() {
        #expect(MetadataState().topicNames.isEmpty)
    }
}
