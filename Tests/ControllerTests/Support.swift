import ClusterMetadata
import ControllerClient
@testable import ControllerCore
import Foundation
import KafkaProtocol
import KafkaTransport
import Logging

/// A topic spec with a fixed id derived from its name.
func topic(_ name: String, partitions: Int32 = 1) -> TopicSpec {
    var hash: UInt64 = 1469598103934665603
    for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 1099511628211 }
    return TopicSpec(name: name, topicId: KafkaUUID(high: hash, low: ~hash | 1), partitionCount: partitions, replicationFactor: 1, configs: [:], isInternal: false)
}

/// Fast Raft timing for tests.
func testConfiguration(id: Int32, voters: [ControllerVoter], port: Int, directory: String, sessionTimeout: Duration = .seconds(6)) -> ControllerConfiguration {
    ControllerConfiguration(
        nodeId: id, voters: voters, listenPort: port, dataDirectory: directory, sessionTimeout: sessionTimeout,
        electionTimeoutMin: .milliseconds(300), electionTimeoutMax: .milliseconds(600),
        raftHeartbeatInterval: .milliseconds(50), tickInterval: .milliseconds(10), appliedStateInterval: 50)
}
