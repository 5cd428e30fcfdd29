import ClusterMetadata
@testable import ControllerCore
import NIOCore
import Raft
import TestKit
import Testing

@Suite struct StorageTests {
    func entry(_ index: UInt64, term: UInt64, _ text: String = "") -> RaftLogEntry {
        RaftLogEntry(term: term, index: index, kind: text.isEmpty ? .noop : .command, payload: Array(text.utf8))
    }

    @Test func appendTruncateHardStateRoundTrip() async throws {
        let directory = try temporaryDirectory("storage")
        defer { removeDirectory(directory) }
        let storage = try await ControllerStorage.open(directory: directory)
        try await storage.write([
            .hardState(RaftHardState(term: 3, votedFor: 2)),
            .append([entry(1, term: 1), entry(2, term: 1, "a"), entry(3, term: 2, "b")]),
        ])
        // A conflicting append replaces the tail from its first index.
        try await storage.write([.append([entry(3, term: 3, "c"), entry(4, term: 3, "d")])])
        try await storage.write([.hardState(RaftHardState(term: 4, votedFor: nil))])
        await storage.close()

        let reopened = try await ControllerStorage.open(directory: directory)
        let state = try await reopened.load()
        #expect(state.raft.hardState == RaftHardState(term: 4, votedFor: nil))
        #expect(state.raft.entries == [entry(1, term: 1), entry(2, term: 1, "a"), entry(3, term: 3, "c"), entry(4, term: 3, "d")])
        #expect(state.raft.snapshot == nil)
        #expect(state.applied == nil)
        await reopened.close()
    }

    @Test func snapshotsCompactionAndAppliedState() async throws {
        let directory = try temporaryDirectory("storage")
        defer { removeDirectory(directory) }
        let storage = try await ControllerStorage.open(directory: directory)
        try await storage.write([.append((1...10).map { entry($0, term: 1, "e\($0)") })])
        let snapshot = RaftSnapshot(metadata: RaftSnapshotMetadata(index: 6, term: 1), data: [1, 2, 3])
        try await storage.write([.saveSnapshot(snapshot), .compact(through: 4)])
        try await storage.write([.appliedState(index: 8, term: 1, data: [9])])
        // An older applied state never replaces a newer one.
        try await storage.write([.appliedState(index: 7, term: 1, data: [7])])
        var state = try await storage.load()
        #expect(state.raft.snapshot == snapshot)
        #expect(state.raft.entries.map(\.index) == Array(5...10))
        #expect(state.applied?.index == 8)
        #expect(state.applied?.data == [9])

        // A leader's snapshot whose term differs at its index replaces the whole log.
        let installed = RaftSnapshot(metadata: RaftSnapshotMetadata(index: 9, term: 5), data: [4])
        try await storage.write([.installSnapshot(installed)])
        state = try await storage.load()
        #expect(state.raft.snapshot == installed)
        #expect(state.raft.entries.isEmpty)
        #expect(state.applied?.index == 9)

        // A matching one keeps the entries after it.
        try await storage.write([.append([entry(10, term: 5, "x"), entry(11, term: 5, "y")])])
        try await storage.write([.installSnapshot(RaftSnapshot(metadata: RaftSnapshotMetadata(index: 10, term: 5), data: [5]))])
        state = try await storage.load()
        #expect(state.raft.entries.map(\.index) == [11])
        await storage.close()
    }

    @Test func emptyPayloadsAndEveryWriteInOneTransactionSurviveReopen() async throws {
        let directory = try temporaryDirectory("storage")
        defer { removeDirectory(directory) }
        let storage = try await ControllerStorage.open(directory: directory)
        var operations: [ControllerStorageOperation] = []
        for k in 1...200 {
            operations.append(.hardState(RaftHardState(term: UInt64(k), votedFor: UInt64(k % 3))))
            operations.append(.append([entry(UInt64(k), term: UInt64(k), k % 2 == 0 ? "" : "p\(k)")]))
        }
        try await storage.write(operations)
        await storage.close()
        let reopened = try await ControllerStorage.open(directory: directory)
        let state = try await reopened.load()
        #expect(state.raft.hardState.term == 200)
        #expect(state.raft.entries.count == 200)
        #expect(state.raft.entries[1].payload.isEmpty)
        #expect(state.raft.entries[2].payload == Array("p3".utf8))
        await reopened.close()
    }

    @Test func aFailedBatchLeavesNothingBehind() async throws {
        let directory = try temporaryDirectory("storage")
        defer { removeDirectory(directory) }
        let storage = try await ControllerStorage.open(directory: directory)
        try await storage.write([.hardState(RaftHardState(term: 1, votedFor: 1)), .append([entry(1, term: 1, "a")])])
        // The duplicate index makes the last insert fail: the term change before it must not survive either,
        // or a vote could be durable without the writes the driver thought came with it.
        await #expect(throws: ControllerStorageError.self) {
            try await storage.write([
                .hardState(RaftHardState(term: 9, votedFor: 3)),
                .append([entry(2, term: 9, "b"), entry(2, term: 9, "c")]),
            ])
        }
        let state = try await storage.load()
        #expect(state.raft.hardState == RaftHardState(term: 1, votedFor: 1))
        #expect(state.raft.entries.map(\.index) == [1])
        // The database is still usable afterwards.
        try await storage.write([.append([entry(2, term: 2, "d")])])
        #expect(try await storage.load().raft.entries.map(\.index) == [1, 2])
        await storage.close()
    }

    @Test func controllerRestartRebuildsMetadataFromDatabase() async throws {
        let directory = try temporaryDirectory("restart")
        defer { removeDirectory(directory) }
        let port = try freePorts(1)[0]
        let voters = [ControllerVoter(id: 1, endpoint: .init(host: "127.0.0.1", port: port))]
        var configuration = testConfiguration(id: 1, voters: voters, port: port, directory: directory)
        configuration.appliedStateInterval = 7
        configuration.snapshotThreshold = 20
        configuration.entriesKeptAfterSnapshot = 5
        let service = try await ControllerService.start(configuration: configuration, logger: testLogger)
        #expect(await service.node.waitForStatus(timeout: .seconds(10)) { $0.role == "leader" })
        for k in 0..<45 {
            let outcome = await service.node.propose(.createTopics([topic("t\(k)")]), timeout: .seconds(5))
            guard case .applied(.items(let items), _) = outcome else {
                Issue.record("write \(k) not applied: \(outcome)")
                return
            }
            #expect(items.first?.errorCode == 0)
        }
        let before = await service.node.metadata
        let beforeApplied = await service.node.currentStatus.appliedIndex
        await service.stop()

        let restarted = try await ControllerService.start(configuration: configuration, logger: testLogger)
        // The saved applied state (every 7 entries) means only a short tail is replayed.
        let restoredAt = await restarted.node.currentStatus.appliedIndex
        #expect(restoredAt + 7 >= beforeApplied && restoredAt > 0)
        #expect(await restarted.node.waitForStatus(timeout: .seconds(10)) { $0.role == "leader" && $0.appliedIndex >= beforeApplied })
        #expect(await restarted.node.metadata.topicNames == before.topicNames)
        #expect(await restarted.node.metadata.topicNames.count == 45)
        let outcome = await restarted.node.propose(.createTopics([topic("t0")]), timeout: .seconds(5))
        guard case .applied(.items(let items), _) = outcome else {
            Issue.record("write after restart not applied: \(outcome)")
            return
        }
        #expect(items.first?.errorCode == MetadataErrorCode.topicAlreadyExists)
        await restarted.stop()
    }
}
