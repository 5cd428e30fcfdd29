import ArgumentParser
import Foundation
import KafkaRecords
import NIOCore
import Simulation

/// `floe bench codec`: CRC32C, compression codecs, and record-batch build/parse throughput.
struct BenchCodec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "Measure CRC32C, compression and record-batch build/parse throughput."
    )

    @Option(help: "Seconds to spend on each measured item.")
    var seconds: Double = 1.0

    @Option(help: "Payload size in bytes (CRC buffer and record payload).")
    var bytes: Int = 1 << 20

    @Option(help: "Approximate size of one JSON record value in bytes.")
    var recordBytes: Int = 1024

    func validate() throws {
        guard seconds > 0, seconds <= 60 else { throw ValidationError("--seconds must be in (0, 60]") }
        guard bytes >= 1024, bytes <= 256 << 20 else { throw ValidationError("--bytes must be in [1 KiB, 256 MiB]") }
        guard recordBytes >= 64, recordBytes <= bytes else { throw ValidationError("--record-bytes must be in [64, bytes]") }
    }

    func run() throws {
        var generator = SeededRandom(seed: 1)
        let values = makeValues(total: bytes, each: recordBytes, using: &generator)
        var plain = RecordBatchBuilder(codec: .none, expectedPayloadBytes: bytes + bytes / 8)
        for (index, value) in values.enumerated() {
            try plain.append(timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: "user-\(index % 500)"), value: value)
        }
        let payload = try plain.build().payload
        var random = ByteBufferAllocator().buffer(capacity: bytes)
        for _ in 0..<(bytes / 8) { random.writeInteger(generator.next()) }

        print("floe bench codec")
        print("  seconds per item: \(seconds)")
        print("  CRC buffer: \(bytes) bytes of random data; hardware CRC32C: \(CRC32C.hardwareAvailable ? "yes (SSE4.2)" : "no")")
        print("  record payload: \(values.count) JSON-like records, \(payload.readableBytes) bytes encoded")
        print("  cores: \(ProcessInfo.processInfo.activeProcessorCount)")
        print("")

        var sink: UInt64 = 0
        var rows: [(String, String, String)] = []

        let hardware = measure(bytes: bytes) {
            random.withUnsafeReadableBytes { sink &+= UInt64(CRC32C.hardwareChecksum($0)) }
        }
        let portable = measure(bytes: bytes) {
            random.withUnsafeReadableBytes { sink &+= UInt64(CRC32C.portableChecksum($0)) }
        }
        rows.append(("crc32c hardware", gbps(hardware), ""))
        rows.append(("crc32c portable", gbps(portable), ""))

        for codec in [CompressionCodec.gzip, .snappy, .lz4, .zstd] {
            let compressed = try Compression.compress(codec, payload)
            let ratio = Double(payload.readableBytes) / Double(compressed.readableBytes)
            let compress = try measureThrowing(bytes: payload.readableBytes) {
                sink &+= UInt64(try Compression.compress(codec, payload).readableBytes)
            }
            let decompress = try measureThrowing(bytes: payload.readableBytes) {
                sink &+= UInt64(
                    try Compression.decompress(codec, compressed, maxOutputBytes: payload.readableBytes).readableBytes)
            }
            rows.append(("\(codec) compress", mibps(compress), String(format: "ratio %.2f", ratio)))
            rows.append(("\(codec) decompress", mibps(decompress), ""))
        }

        for codec in CompressionCodec.allCases {
            func buildBatch() throws -> RecordBatch {
                var builder = RecordBatchBuilder(
                    codec: codec, producerId: 1, producerEpoch: 0, baseSequence: 0,
                    expectedPayloadBytes: payload.readableBytes + 1024)
                for (index, value) in values.enumerated() {
                    try builder.append(
                        timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: "user-\(index % 500)"),
                        value: value)
                }
                return try builder.build()
            }
            let batch = try buildBatch()
            let build = try measureThrowing(bytes: payload.readableBytes) {
                sink &+= UInt64(try buildBatch().sizeInBytes)
            }
            let parse = try measureThrowing(bytes: payload.readableBytes) {
                sink &+= UInt64(try batch.validate(maxUncompressedBytes: 2 * payload.readableBytes).count)
            }
            rows.append(("batch build \(codec)", mibps(build), "\(batch.sizeInBytes) bytes"))
            rows.append(("batch validate+parse \(codec)", mibps(parse), "CRC + decompress + records"))
        }

        print("| item | throughput | notes |")
        print("|---|---:|---|")
        for (item, rate, note) in rows { print("| \(item) | \(rate) | \(note) |") }
        print("")
        print("(payload throughput is uncompressed bytes per second; checksum \(sink % 1000))")
    }

    private func makeValues(total: Int, each: Int, using generator: inout SeededRandom) -> [ByteBuffer] {
        let events = ["click", "view", "purchase", "scroll", "login", "logout"]
        let countries = ["DE", "FR", "US", "JP", "BR", "IN", "NG", "SE"]
        var values: [ByteBuffer] = []
        var used = 0
        var id = 0
        while used < total {
            var value = ByteBufferAllocator().buffer(capacity: each + 128)
            value.writeString("{")
            while value.readableBytes < each - 64 {
                let user = generator.next() % 5_000
                let amount = Double(generator.next() % 100_000) / 100
                value.writeString(
                    "\"e\(id)\": {\"id\": \(id), \"user\": \"user-\(user)\", \"event\": \"\(events[Int(generator.next() % 6)])\", \"country\": \"\(countries[Int(generator.next() % 8)])\", \"amount\": \(amount), \"ts\": \(1_700_000_000_000 + UInt64(id) * 17 + generator.next() % 10)}, "
                )
                id += 1
            }
            value.writeString("\"end\": true}")
            used += value.readableBytes
            values.append(value)
        }
        return values
    }

    private func measure(bytes: Int, _ body: () -> Void) -> Double {
        (try? measureThrowing(bytes: bytes, body)) ?? 0
    }

    /// Bytes per second of `body`, each run processing `bytes`.
    private func measureThrowing(bytes: Int, _ body: () throws -> Void) throws -> Double {
        let (runs, elapsed) = try repeatTimed(seconds: seconds, body)
        return Double(bytes) * Double(runs) / elapsed
    }

    private func gbps(_ rate: Double) -> String { String(format: "%.2f GB/s", rate / 1e9) }
    private func mibps(_ rate: Double) -> String { String(format: "%.0f MiB/s", rate / Double(1 << 20)) }
}
