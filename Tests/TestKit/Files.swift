import Foundation

/// A fresh directory under the system's temporary directory, named `floe-<name>-<uuid>`.
public func temporaryDirectory(_ name: String = "test") throws -> String {
    let path = NSTemporaryDirectory() + "floe-\(name)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Removes `path` and everything below it, ignoring a path that is already gone.
public func removeDirectory(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// The repository's root directory (this file is Tests/TestKit/Files.swift).
public let repositoryRoot: String = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The path of the package's executable `name` as built beside the running test bundle, or nil when it
/// is not built (`swift build --build-tests` builds every product).
public func builtProduct(_ name: String) -> String? {
    var candidates: [URL] = []
    for start in [try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"), CommandLine.arguments.first] {
        guard let start else { continue }
        // The bundle may be a directory (…/FloePackageTests.xctest/Contents/MacOS/…): walk up a few levels.
        var directory = URL(fileURLWithPath: start).deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(directory)
            directory = directory.deletingLastPathComponent()
        }
    }
    candidates.append(URL(fileURLWithPath: repositoryRoot).appendingPathComponent(".build/debug"))
    candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug"))
    return candidates.map { $0.appendingPathComponent(name).path }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// The last `lines` lines of the text file at `path`, for failure messages.
public func fileTail(_ path: String, lines: Int = 30) -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "(no file \(path))" }
    return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
}
