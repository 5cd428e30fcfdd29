import Foundation
import Synchronization

/// Why rendering or reading the manifests failed.
struct DeployTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A rendered Kubernetes object, read as the JSON-shaped tree YAML decodes to.
struct KubeObject {
    var tree: [String: Any]

    var kind: String { tree["kind"] as? String ?? "" }
    var name: String { string("metadata", "name") ?? "" }
    var label: String { "\(kind)/\(name)" }

    func value(_ path: String...) -> Any? { Self.value(tree, path) }
    func string(_ path: String...) -> String? { Self.value(tree, path) as? String }
    func dictionary(_ path: String...) -> [String: Any]? { Self.value(tree, path) as? [String: Any] }
    func list(_ path: String...) -> [Any]? { Self.value(tree, path) as? [Any] }

    static func value(_ tree: Any?, _ path: [String]) -> Any? {
        var current = tree
        for key in path {
            guard let dictionary = current as? [String: Any] else { return nil }
            current = dictionary[key]
        }
        return current
    }
}

/// Renders `Deploy/overlays/<name>` with kubectl and decodes it.
enum Overlay {
    /// The repository root, found from this file's place in `Tests/DeployTests`.
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static var overlaysDirectory: URL { repositoryRoot.appendingPathComponent("Deploy/overlays") }

    /// The overlay folders present in the tree.
    static func names() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: overlaysDirectory.path)
            .filter { FileManager.default.fileExists(atPath: overlaysDirectory.appendingPathComponent("\($0)/kustomization.yaml").path) }
            .sorted()
    }

    /// Rendered overlays as JSON, so each is rendered once per test run.
    private static let cache = Mutex<[String: Data]>([:])

    static func render(_ name: String) throws -> [KubeObject] {
        let json: Data
        if let cached = cache.withLock({ $0[name] }) {
            json = cached
        } else {
            json = try renderJSON(name)
            cache.withLock { $0[name] = json }
        }
        guard let documents = try JSONSerialization.jsonObject(with: json) as? [[String: Any]] else {
            throw DeployTestFailure("overlay \(name) did not render to a list of objects")
        }
        return documents.map(KubeObject.init)
    }

    private static func renderJSON(_ name: String) throws -> Data {
        guard let kubectl = which("kubectl") else {
            throw DeployTestFailure("kubectl is not on PATH: the manifest tests render Deploy/overlays with `kubectl kustomize`")
        }
        guard let python = which("python3") else {
            throw DeployTestFailure("python3 is not on PATH: the manifest tests decode the rendered YAML with PyYAML")
        }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("floe-deploy-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let yaml = scratch.appendingPathComponent("rendered.yaml")
        let rendered = try run(kubectl, ["kustomize", overlaysDirectory.appendingPathComponent(name).path], scratch: scratch)
        try rendered.write(to: yaml)
        // PyYAML comes with kubernetes-validate (Tools/install-deps.sh); Foundation has no YAML reader.
        let script = "import json, sys, yaml\njson.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)"
        return try run(python, ["-c", script, yaml.path], scratch: scratch)
    }

    static func which(_ name: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Runs a tool to completion (at most `timeout`) with its output in files, so no pipe can fill up and block it.
    static func run(_ executable: String, _ arguments: [String], scratch: URL, timeout: TimeInterval = 120) throws -> Data {
        let id = UUID().uuidString
        let out = scratch.appendingPathComponent("\(id).out"), err = scratch.appendingPathComponent("\(id).err")
        guard FileManager.default.createFile(atPath: out.path, contents: nil), FileManager.default.createFile(atPath: err.path, contents: nil)
        else { throw DeployTestFailure("cannot create output files in \(scratch.path)") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            _ = exited.wait(timeout: .now() + 5)
            throw DeployTestFailure("\(executable) \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s")
        }
        guard process.terminationStatus == 0 else {
            let message = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
            throw DeployTestFailure("\(executable) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(message)")
        }
        return try Data(contentsOf: out)
    }
}
