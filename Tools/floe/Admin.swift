import ArgumentParser
import ControllerClient
import Foundation
import KafkaProtocol
import KafkaTransport
import Logging

/// `floe admin …`: cluster administration over the Kafka protocol (any broker answers).
struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Administer a running cluster through any broker.",
        subcommands: [Topics.self, CreateTopic.self, DeleteTopic.self, Reassign.self, Reassignments.self]
    )

    struct Connection: ParsableArguments {
        @Option(help: "HOST:PORT of any broker (or a comma-separated list; the first is used).") var bootstrap = "127.0.0.1:9092"

        func open() throws -> (KafkaWire, KafkaEndpoint) {
            var logger = Logger(label: "floe-admin")
            logger.logLevel = .critical
            return (KafkaWire(clientId: "floe-admin", logger: logger), try KafkaWire.bootstrapEndpoint(bootstrap))
        }
    }

    struct Topics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topics with each partition's leader and epoch.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let (wire, endpoint) = try connection.open()
            defer { Task { await wire.close() } }
            let metadata = try await wire.metadata(endpoint, topics: nil)
            print("brokers: " + metadata.brokers.sorted { $0.nodeId < $1.nodeId }.map { "\($0.nodeId)@\($0.host):\($0.port) zone \($0.rack ?? "-")" }.joined(separator: ", "))
            for topic in metadata.topics.sorted(by: { ($0.name ?? "") < ($1.name ?? "") }) {
                print("\(topic.name ?? "?") (\(topic.partitions.count) partitions\(topic.isInternal ? ", internal" : ""))")
                for partition in topic.partitions.sorted(by: { $0.partitionIndex < $1.partitionIndex }) {
                    let error = partition.errorCode == 0 ? "" : "  error \(partition.errorCode)"
                    print("  partition \(partition.partitionIndex): leader \(partition.leaderId), epoch \(partition.leaderEpoch)\(error)")
                }
            }
        }
    }

    struct CreateTopic: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create-topic", abstract: "Create a topic.")
        @OptionGroup var connection: Connection
        @Argument(help: "Topic name.") var name: String
        @Option(help: "Partitions.") var partitions: Int32 = 1
        @Option(help: "Topic config KEY=VALUE (repeatable).") var config: [String] = []

        func run() async throws {
            let (wire, endpoint) = try connection.open()
            defer { Task { await wire.close() } }
            var configs: [String: String] = [:]
            for entry in config {
                guard let eq = entry.firstIndex(of: "=") else { throw ValidationError("--config wants KEY=VALUE, got \(entry)") }
                configs[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
            }
            try await wire.createTopic(endpoint, name: name, partitions: partitions, configs: configs)
            print("created \(name) with \(partitions) partitions")
        }
    }

    struct DeleteTopic: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete-topic", abstract: "Delete a topic.")
        @OptionGroup var connection: Connection
        @Argument(help: "Topic name.") var name: String

        func run() async throws {
            let (wire, endpoint) = try connection.open()
            defer { Task { await wire.close() } }
            var request = DeleteTopicsRequest()
            request.topicNames = [name]
            request.timeoutMs = 30_000
            let response = try await wire.call(request, version: 5, to: endpoint, as: DeleteTopicsResponse.self)
            guard let result = response.responses.first else { throw KafkaWire.Failure(description: "empty DeleteTopics response") }
            guard result.errorCode == 0 else { throw KafkaWire.Failure(description: "error \(result.errorCode): \(result.errorMessage ?? "")") }
            print("deleted \(name)")
        }
    }

    struct Reassign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a partition's leadership to another broker (no data is copied).",
            discussion: "Prints how long it took until the partition accepted a produce on the new leader.")
        @OptionGroup var connection: Connection
        @Option(help: "Topic.") var topic: String
        @Option(help: "Partition.") var partition: Int32
        @Option(help: "Broker id that should lead it.") var to: Int32

        func run() async throws {
            let (wire, endpoint) = try connection.open()
            defer { Task { await wire.close() } }
            let elapsed = try await Self.move(wire: wire, bootstrap: endpoint, topic: topic, partition: partition, to: to, probe: false)
            print(String(format: "%@-%d now led by %d: serving again after %.1f ms", topic, partition, to, inSeconds(elapsed) * 1000))
        }

        /// Requests the move, then waits until Metadata shows the new leader and the leader serves the
        /// partition: with `probe`, until a produce of one small record is acknowledged there (the
        /// benchmark's own topics), otherwise until ListOffsets answers (nothing is written).
        static func move(wire: KafkaWire, bootstrap: KafkaEndpoint, topic: String, partition: Int32, to: Int32, probe: Bool) async throws -> Duration {
            let clock = ContinuousClock()
            let start = clock.now
            var request = AlterPartitionReassignmentsRequest()
            request.timeoutMs = 30_000
            var entry = AlterPartitionReassignmentsRequest.ReassignableTopic()
            entry.name = topic
            var target = AlterPartitionReassignmentsRequest.ReassignablePartition()
            target.partitionIndex = partition
            target.replicas = [to]
            entry.partitions = [target]
            request.topics = [entry]
            let response = try await wire.call(request, version: 0, to: bootstrap, as: AlterPartitionReassignmentsResponse.self)
            if response.errorCode != 0 { throw KafkaWire.Failure(description: "error \(response.errorCode): \(response.errorMessage ?? "")") }
            if let failed = response.responses.first?.partitions.first, failed.errorCode != 0 {
                throw KafkaWire.Failure(description: "error \(failed.errorCode): \(failed.errorMessage ?? "")")
            }
            if probe {
                try await wire.produceUntilAccepted(bootstrap, topic: topic, partition: partition, leader: to, deadline: .seconds(30))
            } else {
                try await wire.waitUntilServing(bootstrap, topic: topic, partition: partition, leader: to, deadline: .seconds(30))
            }
            return clock.now - start
        }
    }

    struct Reassignments: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List reassignments in progress.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let (wire, endpoint) = try connection.open()
            defer { Task { await wire.close() } }
            var request = ListPartitionReassignmentsRequest()
            request.timeoutMs = 30_000
            request.topics = nil
            let response = try await wire.call(request, version: 0, to: endpoint, as: ListPartitionReassignmentsResponse.self)
            if response.errorCode != 0 { throw KafkaWire.Failure(description: "error \(response.errorCode): \(response.errorMessage ?? "")") }
            if response.topics.isEmpty { print("no reassignments in progress") }
            for topic in response.topics {
                for partition in topic.partitions {
                    print("\(topic.name)-\(partition.partitionIndex): replicas \(partition.replicas), adding \(partition.addingReplicas), removing \(partition.removingReplicas)")
                }
            }
        }
    }
}

extension KafkaWire {
    /// Waits until `leader` leads `topic`-`partition` (per Metadata) and answers ListOffsets for it.
    func waitUntilServing(_ bootstrap: KafkaEndpoint, topic: String, partition: Int32, leader: Int32, deadline: Duration) async throws {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        var lastError = "no attempt"
        while clock.now < end {
            do {
                let leaders = try await self.leaders(bootstrap, topic: topic, deadline: clock.now.duration(to: end))
                if let current = leaders[partition], current.id == leader {
                    var entry = ListOffsetsRequest.ListOffsetsTopic()
                    entry.name = topic
                    var part = ListOffsetsRequest.ListOffsetsPartition()
                    part.partitionIndex = partition
                    part.timestamp = -1
                    entry.partitions = [part]
                    var request = ListOffsetsRequest()
                    request.replicaId = -1
                    request.topics = [entry]
                    let response = try await call(request, version: 7, to: current.endpoint, as: ListOffsetsResponse.self)
                    let code = response.topics.first?.partitions.first?.errorCode ?? -1
                    if code == 0 { return }
                    lastError = "ListOffsets error \(code)"
                } else {
                    lastError = "leader is still \(leaders[partition]?.id ?? -1)"
                }
            } catch {
                lastError = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw Failure(description: "\(topic)-\(partition) not served by \(leader) within \(deadline): \(lastError)")
    }

    /// Produces one small record to `topic`-`partition` at its current leader (optionally waiting for
    /// `leader` to lead it) until it is acknowledged.
    func produceUntilAccepted(
        _ bootstrap: KafkaEndpoint, topic: String, partition: Int32, leader: Int32? = nil, notLeader: Int32? = nil, deadline: Duration
    ) async throws {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        var lastError = "no attempt"
        while clock.now < end {
            do {
                let leaders = try await self.leaders(bootstrap, topic: topic, deadline: clock.now.duration(to: end))
                guard let current = leaders[partition] else { throw Failure(description: "no partition \(partition)") }
                if let leader, current.id != leader {
                    lastError = "leader is still \(current.id)"
                    try await Task.sleep(for: .milliseconds(5))
                    continue
                }
                if let notLeader, current.id == notLeader {
                    lastError = "leader is still \(current.id)"
                    try await Task.sleep(for: .milliseconds(5))
                    continue
                }
                let response = try await call(Self.probeRecord(topic: topic, partition: partition), version: 9, to: current.endpoint, as: ProduceResponse.self)
                let code = response.responses.first?.partitionResponses.first?.errorCode ?? -1
                if code == 0 { return }
                lastError = "produce error \(code)"
            } catch {
                lastError = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw Failure(description: "\(topic)-\(partition) not writable within \(deadline): \(lastError)")
    }
}
