import Foundation
import NIOCore
import WALWriterCore

/// A fresh temporary directory, removed by `cleanup()`.
struct TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "wal-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// Same content function as wal-crash-helper.
func helperPayload(stream: UInt64, base: Int64) -> ByteBuffer {
    let length = 64 + Int((stream &* 131 &+ UInt64(base) &* 17) % 900)
    var buffer = ByteBuffer()
    for i in 0..<length { buffer.writeInteger(UInt8(truncatingIfNeeded: stream &* 31 &+ UInt64(base) &* 7 &+ UInt64(i))) }
    return buffer
}

func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

func segmentFiles(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".wal") }.sorted()
}

import Logging

/// Engines in tests log only problems.
let quietLogger: Logger = {
    var logger = Logger(label: "floe.wal.test")
    logger.logLevel = .warning
    return logger
}()
