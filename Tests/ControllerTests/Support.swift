import ClusterMetadata
import ControllerClient
@testable import ControllerCore
import Foundation
import KafkaProtocol
import KafkaTransport
import Logging

struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out: \(what)" }
}

/// Runs `operation`, failing with `TestTimeout` after `limit`.
func withTimeout<T: Sendable>(
    _ limit: Duration, _ what: String, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TestTimeout(what: what) }
        return value
    }
}

/// A fresh temporary directory, removed by `cleanup`.
func temporaryDirectory(_ name: String) throws -> String {
    let path = NSTemporaryDirectory() + "floe-controller-\(name)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func removeDirectory(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

var testLogger: Logger {
    var logger = Logger(label: "controller-test")
    logger.logLevel = ProcessInfo.processInfo.environment["FLOE_TEST_LOG"] != nil ? .debug : .critical
    return logger
}

/// A topic spec with a fixed id derived from its name.
func topic(_ name: String, partitions: Int32 = 1) -> TopicSpec {
    var hash: UInt64 = 1469598103934665603
    for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 1099511628211 }
    return TopicSpec(name: name, topicId: KafkaUUID(high: hash, low: ~hash | 1), partitionCount: partitions, replicationFactor: 1, configs: [:], isInternal: false)
}

/// Free loopback ports, found by binding port 0 (released before use; fine on a test machine).
func freePorts(_ count: Int) throws -> [Int] {
    var sockets: [Int32] = []
    var ports: [Int] = []
    defer { for s in sockets { close(s) } }
    for _ in 0..<count {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        sockets.append(s)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, length) } }
        guard bound == 0 else { throw TestTimeout(what: "bind a free port") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) } }
        ports.append(Int(UInt16(bigEndian: address.sin_port)))
    }
    return ports
}

/// Fast Raft timing for tests.
func testConfiguration(id: Int32, voters: [ControllerVoter], port: Int, directory: String, sessionTimeout: Duration = .seconds(6)) -> ControllerConfiguration {
    ControllerConfiguration(
        nodeId: id, voters: voters, listenPort: port, dataDirectory: directory, sessionTimeout: sessionTimeout,
        electionTimeoutMin: .milliseconds(300), electionTimeoutMax: .milliseconds(600),
        raftHeartbeatInterval: .milliseconds(50), tickInterval: .milliseconds(10), appliedStateInterval: 50)
}
