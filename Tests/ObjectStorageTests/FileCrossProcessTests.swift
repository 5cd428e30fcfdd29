import Foundation
import Logging
import NIOCore
import NIOPosix
import ObjectStorage
import TestKit
import Testing

/// Conditional create raced by several processes on one directory. The test binary starts copies
/// of itself running only this test with FLOE_RACE_DIR set; those copies act as racers and write
/// the keys they won to a file, and the parent (also racing) checks each key has exactly one winner.
/// A ready line on each child's stdout and a byte on its stdin line the racers up so they overlap.
@Suite("file:// across processes")
struct FileCrossProcessTests {
    static let keys = 150
    static let readyMarker = "FLOE-RACER-READY"

    static func race(directory: String, racer: Int) async throws -> [Int] {
        let store = try FileObjectStore(directory: directory, logger: Logger(label: "racer"))
        var won: [Int] = []
        for key in 0..<keys where try await store.putIfAbsent("race/\(key)", ByteBuffer(string: "racer-\(racer)-\(key)")) {
            won.append(key)
        }
        return won
    }

    @Test func conditionalCreateAcrossProcesses() async throws {
        let environment = ProcessInfo.processInfo.environment
        if let directory = environment["FLOE_RACE_DIR"], let racer = environment["FLOE_RACER"].flatMap(Int.init) {
            FileHandle.standardOutput.write(Data((Self.readyMarker + "\n").utf8))
            _ = FileHandle.standardInput.readData(ofLength: 1)
            let won = try await Self.race(directory: directory, racer: racer)
            try won.map(String.init).joined(separator: "\n").write(toFile: "\(directory).won-\(racer)", atomically: true, encoding: .utf8)
            return
        }

        let binary = CommandLine.arguments[0]
        try #require(FileManager.default.isExecutableFile(atPath: binary), "cannot re-run the test binary at \(binary)")
        let directory = try temporaryDirectory("objectstore")
        let children = 3
        var processes: [Process] = []
        var starts: [Pipe] = []
        var readies: [Pipe] = []
        for racer in 1...children {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["--testing-library", "swift-testing", "--filter", "conditionalCreateAcrossProcesses"]
            process.environment = environment.merging(["FLOE_RACE_DIR": directory, "FLOE_RACER": String(racer)]) { $1 }
            let start = Pipe()
            let ready = Pipe()
            process.standardInput = start
            process.standardOutput = ready
            process.standardError = FileHandle.nullDevice
            try process.run()
            processes.append(process)
            starts.append(start)
            readies.append(ready)
        }
        // A watchdog ends the children if they hang, which also unblocks the reads below.
        let watchdog = Task {
            // The watchdog's deadline: this sleep bounds a hang, it waits for nothing.
            try await Task.sleep(for: .seconds(90))
            for process in processes where process.isRunning { process.terminate() }
        }
        defer { watchdog.cancel() }
        for ready in readies {
            let handle = ready.fileHandleForReading
            let seen = try await NIOThreadPool.singleton.runIfActive { () -> Bool in
                var text = ""
                while !text.contains(Self.readyMarker) {
                    let chunk = handle.availableData
                    if chunk.isEmpty { return false }
                    text += String(decoding: chunk, as: UTF8.self)
                }
                return true
            }
            try #require(seen, "a racer process exited before it was ready")
        }
        for start in starts { start.fileHandleForWriting.write(Data([1])) }
        var winners: [Int: [Int]] = [:]
        for key in try await Self.race(directory: directory, racer: 0) { winners[key, default: []].append(0) }

        for (process, ready) in zip(processes, readies) {
            // Drain the child's output to EOF (it exits), off the cooperative pool.
            let handle = ready.fileHandleForReading
            _ = try await NIOThreadPool.singleton.runIfActive { handle.readDataToEndOfFile() }
            process.waitUntilExit()
            #expect(process.terminationReason == .exit && process.terminationStatus == 0, "racer \(process.processIdentifier) failed")
        }
        for racer in 1...children {
            let text = try String(contentsOfFile: "\(directory).won-\(racer)", encoding: .utf8)
            for line in text.split(separator: "\n") {
                winners[Int(line) ?? -1, default: []].append(racer)
            }
            try? FileManager.default.removeItem(atPath: "\(directory).won-\(racer)")
        }

        let store = try FileObjectStore(directory: directory, logger: Logger(label: "check"))
        #expect(Set(winners.keys) == Set(0..<Self.keys))
        for key in 0..<Self.keys {
            let owners = winners[key] ?? []
            #expect(owners.count == 1, "key \(key) won by \(owners)")
            if let owner = owners.first {
                #expect(try await store.get("race/\(key)") == ByteBuffer(string: "racer-\(owner)-\(key)"))
            }
        }
        // Every racer won something only if they overlapped; at least the stored objects are whole.
        #expect(try await store.list(prefix: "race/").count == Self.keys)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
