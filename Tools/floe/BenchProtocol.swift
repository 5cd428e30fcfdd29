import ArgumentParser
import Foundation
import KafkaProtocol
import KafkaRecords
import NIOCore
import Simulation

/// `floe bench protocol`: decode and encode cost of a ProduceRequest carrying one large batch,
/// and proof that decoding does not copy the record bytes.
struct BenchProtocol: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "protocol",
        abstract: "Measure ProduceRequest decode/encode of a large batch and check the records are not copied."
    )

    @Option(help: "Seconds to spend on each measured item.")
    var seconds: Double = 1.0

    @Option(help: "Size of the record batch in the request, in bytes.")
    var batchBytes: Int = 1 << 20

    @Option(help: "Partitions in the request (each gets its own batch of --batch-bytes).")
    var partitions: Int = 1

    func validate() throws {
        guard seconds > 0, seconds <= 60 else { throw ValidationError("--seconds must be in (0, 60]") }
        guard batchBytes >= 1024, batchBytes <= 64 << 20 else {
            throw ValidationError("--batch-bytes must be in [1 KiB, 64 MiB]")
        }
        guard partitions >= 1, partitions <= 1000 else { throw ValidationError("--partitions must be in [1, 1000]") }
    }

    func run() throws {
        let batch = try makeBatch()
        print("floe bench protocol")
        print("  seconds per item: \(seconds)")
        print("  request: ProduceRequest, \(partitions) partition(s), one \(batch.readableBytes)-byte v2 batch each")
        print("  cores: \(ProcessInfo.processInfo.activeProcessorCount)")
        print("")
        print("| version | request bytes | decode | encode | zero-copy records |")
        print("|---|---:|---:|---:|---|")

        for version: Int16 in [3, 7, 9, 11] {
            var request = ProduceRequest()
            request.acks = -1
            request.timeoutMs = 30_000
            var topic = ProduceRequest.TopicProduceData()
            topic.name = "bench"
            topic.partitionData = (0..<partitions).map { index in
                var partition = ProduceRequest.PartitionProduceData()
                partition.index = Int32(index)
                partition.records = batch
                return partition
            }
            request.topicData = [topic]
            var encoded = ByteBuffer()
            try request.encode(to: &encoded, version: version)
            let frame = encoded

            var sink = 0
            let decodeTime = try timePerRun {
                var input = frame
                let decoded = try ProduceRequest(from: &input, version: version)
                sink &+= decoded.topicData[0].partitionData.count
            }
            let encodeTime = try timePerRun {
                var output = ByteBuffer()
                output.reserveCapacity(frame.readableBytes)
                try request.encode(to: &output, version: version)
                sink &+= output.readableBytes
            }

            var input = frame
            let decoded = try ProduceRequest(from: &input, version: version)
            let zeroCopy = try decoded.topicData[0].partitionData.allSatisfy { partition in
                guard let records = partition.records else { return false }
                return try Self.lies(records, inside: frame)
            }
            print(
                "| v\(version) | \(frame.readableBytes) | \(Self.format(decodeTime)) | \(Self.format(encodeTime)) | \(zeroCopy ? "yes" : "NO (copied)") |"
            )
            if sink == -1 { print(sink) }
        }
        print("")
        print("(decode time is for the whole request; encode writes the records into a new buffer, which copies them)")
    }

    /// True when `slice`'s bytes are inside `frame`'s storage, i.e. decoding did not copy them.
    private static func lies(_ slice: ByteBuffer, inside frame: ByteBuffer) throws -> Bool {
        let sliceStart = slice.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        return frame.withUnsafeReadableBytes { bytes in
            let start = UInt(bitPattern: bytes.baseAddress)
            return sliceStart >= start && sliceStart + UInt(slice.readableBytes) <= start + UInt(bytes.count)
        }
    }

    private func makeBatch() throws -> ByteBuffer {
        var generator = SeededRandom(seed: 7)
        var builder = RecordBatchBuilder(codec: .none, expectedPayloadBytes: batchBytes + 4096)
        var written = 0
        var index = 0
        while written < batchBytes - 1200 {
            var value = ByteBuffer()
            for _ in 0..<128 { value.writeInteger(generator.next()) }
            written += value.readableBytes + 20
            try builder.append(timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: "k\(index)"), value: value)
            index += 1
        }
        return try builder.build().bytes
    }

    /// Seconds per run of `body`.
    private func timePerRun(_ body: () throws -> Void) throws -> Double {
        let (runs, elapsed) = try repeatTimed(seconds: seconds, body)
        return elapsed / Double(runs)
    }

    private static func format(_ seconds: Double) -> String {
        seconds < 1e-3 ? String(format: "%.1f µs", seconds * 1e6) : String(format: "%.2f ms", seconds * 1e3)
    }
}
