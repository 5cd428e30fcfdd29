import ArgumentParser
import ControllerClient
import Foundation
import FloeService
import KafkaProtocol
import KafkaRecords
import KafkaTransport
import Logging
import NIOCore
import Synchronization

/// `floe bench produce`: Kafka producers (and optionally a consumer) against a running cluster,
/// reporting throughput and produce / end-to-end latency percentiles.
struct BenchProduce: AsyncParsableCommand, Sendable, EventLoopSizing {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Produce to a running cluster over Kafka; report MiB/s and produce and end-to-end latency.",
        discussion: """
            Each producer sends Produce v9 requests of --records-per-batch records (one v2 batch) to the
            partitions it owns, round-robin, with --in-flight requests outstanding. --rate caps each
            producer's requests per second (0: as fast as answers come back). With --consume a consumer
            fetches every partition from where the run starts and measures produce-to-receive latency
            (the send instant travels in each record's first 8 bytes). Produce latency runs from handing the
            encoded request to the connection until the event loop has parsed its answer: building the batch
            and decoding the answer are the client's own work and are left out.
            """
    )

    @Option(help: "HOST:PORT of any broker (or a comma-separated list; the first is used).") var bootstrap = "127.0.0.1:9092"
    @Option(help: "Topic to produce to; created with --partitions if missing (default: a new bench topic).") var topic: String?
    @Option(help: "Partitions of the topic when it is created.") var partitions: Int32 = 1
    @Option(help: "Bytes of each record's value.") var recordSize = 1024
    @Option(help: "Records per produce request (one batch: the client's batch size).") var recordsPerBatch = 1
    @Option(help: "Producers, each with its own connection.") var producers = 1
    @Option(help: "Requests each producer keeps in flight.") var inFlight = 1
    @Option(help: "acks: -1 (all), 1 or 0.") var acks: Int16 = -1
    @Option(help: "Requests per second per producer; 0 = unthrottled.") var rate: Double = 0
    @Option(help: "Compression: none, gzip, snappy, lz4, zstd.") var codec = "none"
    @Option(help: "Seconds of load.") var duration: Double = 10
    @Flag(help: "Also consume and measure end-to-end latency.") var consume = false
    @Option(help: "Event-loop threads of the load generator (they also run its tasks).") var eventLoops = 1

    func validate() throws {
        guard (1...(8 << 20)).contains(recordSize), recordSize >= 8 else { throw ValidationError("--record-size must be in [8, 8 MiB]") }
        guard (1...100_000).contains(recordsPerBatch) else { throw ValidationError("--records-per-batch must be in [1, 100000]") }
        guard (1...1024).contains(producers) else { throw ValidationError("--producers must be in [1, 1024]") }
        guard (1...64).contains(inFlight) else { throw ValidationError("--in-flight must be in [1, 64]") }
        guard [-1, 0, 1].contains(acks) else { throw ValidationError("--acks must be -1, 0 or 1") }
        guard (1...10_000).contains(partitions) else { throw ValidationError("--partitions must be in [1, 10000]") }
        guard rate >= 0 else { throw ValidationError("--rate must not be negative") }
        guard duration > 0, duration <= 3600 else { throw ValidationError("--duration must be in (0, 3600]") }
        guard (1...64).contains(eventLoops) else { throw ValidationError("--event-loops must be in [1, 64]") }
        guard Self.codecs[codec] != nil else { throw ValidationError("--codec must be one of none, gzip, snappy, lz4, zstd") }
    }

    static let codecs: [String: CompressionCodec] = ["none": .none, "gzip": .gzip, "snappy": .snappy, "lz4": .lz4, "zstd": .zstd]

    func run() async throws {
        var quiet = Logger(label: "floe-bench-produce")
        quiet.logLevel = .critical
        let logger = quiet
        let bootstrapEndpoint = try KafkaWire.bootstrapEndpoint(bootstrap)
        let wire = KafkaWire(clientId: "floe-bench", logger: logger)
        let name = topic ?? "bench-\(UInt32.random(in: 0...UInt32.max))"
        try await wire.createTopic(bootstrapEndpoint, name: name, partitions: partitions)
        let leaders = try await wire.leaders(bootstrapEndpoint, topic: name)
        let partitionIds = leaders.keys.sorted()
        let clock = ContinuousClock()
        let origin = clock.now

        print("floe bench produce")
        print("  bootstrap \(bootstrap), topic \(name) (\(partitionIds.count) partitions)")
        print("  record size \(recordSize) B, records per batch \(recordsPerBatch), codec \(codec), acks \(acks)")
        print("  producers \(producers), in flight \(inFlight), rate \(rate == 0 ? "unthrottled" : "\(rate) req/s per producer"), duration \(duration) s, consumer \(consume)")
        print("  cores: \(ProcessInfo.processInfo.activeProcessorCount)")

        // Start consuming at the current end, so only this run's records are measured.
        var startOffsets: [Int32: Int64] = [:]
        if consume {
            for id in partitionIds { startOffsets[id] = try await latestOffset(wire, leaders[id]!.endpoint, topic: name, partition: id) }
        }
        let stop = StopFlag()
        let firstOffsets = startOffsets
        let consumer: Task<[Duration], Error>? = consume ? Task {
            try await consumeLoop(wire: KafkaWire(clientId: "floe-bench-consumer", logger: logger), leaders: leaders, topic: name, from: firstOffsets, origin: origin, stop: stop)
        } : nil
        let started = clock.now
        let results = try await withThrowingTaskGroup(of: ProducerResult.self) { group in
            for producer in 0..<producers {
                let owned = partitionIds.enumerated().filter { $0.offset % producers == producer % partitionIds.count || producers > partitionIds.count && $0.offset == producer % partitionIds.count }.map(\.element)
                group.addTask {
                    try await produceLoop(
                        wire: KafkaWire(clientId: "floe-bench-\(producer)", logger: logger), leaders: leaders, topic: name,
                        partitions: owned.isEmpty ? [partitionIds[producer % partitionIds.count]] : owned, origin: origin, seed: UInt64(producer))
                }
            }
            var all: [ProducerResult] = []
            for try await result in group { all.append(result) }
            return all
        }
        let elapsed = inSeconds(clock.now - started)
        // Let the consumer drain what was acknowledged, bounded.
        if consume { try await Task.sleep(for: .milliseconds(500)) }
        stop.value.store(true, ordering: .relaxed)
        let e2e = try await consumer?.value.sorted() ?? []

        let latencies = results.flatMap(\.latencies).sorted()
        let records = results.reduce(0) { $0 + $1.records }
        let errors = results.reduce(0) { $0 + $1.errors }
        let bytes = Double(records) * Double(recordSize)
        print("")
        print(String(format: "  produced %d records in %.2f s: %.0f records/s, %.1f MiB/s (values only), %d failed requests", records, elapsed, Double(records) / elapsed, bytes / elapsed / 1_048_576, errors))
        if acks != 0 {
            print("  produce latency (request sent → acknowledged): p50 \(ms(percentile(latencies, 0.5))) ms, p99 \(ms(percentile(latencies, 0.99))) ms, p999 \(ms(percentile(latencies, 0.999))) ms (\(latencies.count) requests)")
        }
        if consume {
            print("  end-to-end latency (sent → consumer received): p50 \(ms(percentile(e2e, 0.5))) ms, p99 \(ms(percentile(e2e, 0.99))) ms, p999 \(ms(percentile(e2e, 0.999))) ms (\(e2e.count) records)")
        }
        await wire.close()
    }

    struct ProducerResult: Sendable {
        var latencies: [Duration] = []
        var records = 0
        var errors = 0
    }

    private func produceLoop(
        wire: KafkaWire, leaders: [Int32: (id: Int32, endpoint: KafkaEndpoint)], topic: String, partitions: [Int32],
        origin: ContinuousClock.Instant, seed: UInt64
    ) async throws -> ProducerResult {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: .milliseconds(Int64(duration * 1000)))
        let interval = rate > 0 ? Duration.nanoseconds(Int64(1e9 / rate)) : .zero
        var result = ProducerResult()
        var next = clock.now
        var turn = 0
        let filler = ByteBuffer(repeating: UInt8(truncatingIfNeeded: seed &+ 7), count: recordSize - 8)
        try await withThrowingTaskGroup(of: (Duration, Bool).self) { group in
            var inFlightNow = 0
            while clock.now < end {
                if inFlightNow >= inFlight, let (latency, ok) = try await group.next() {
                    inFlightNow -= 1
                    if ok { result.latencies.append(latency); result.records += recordsPerBatch } else { result.errors += 1 }
                }
                if rate > 0 {
                    next = next.advanced(by: interval)
                    if next > clock.now { try await Task.sleep(until: next, clock: clock) }
                }
                let partition = partitions[turn % partitions.count]
                turn += 1
                let request = try makeRequest(topic: topic, partition: partition, sentAt: clock.now - origin, filler: filler)
                var body = ByteBuffer()
                try request.encode(to: &body, version: 9)
                let connection = try await wire.transport.connection(to: leaders[partition]!.endpoint)
                inFlightNow += 1
                // The clock brackets the wire exchange only: the request is built and encoded before `sent`, and
                // the answer is stamped on the event loop that parsed it, before any task resumes.
                let sent = clock.now
                if acks == 0 {
                    let clientId = wire.clientId
                    group.addTask {
                        try await connection.sendOneway(
                            apiKey: ApiKey.produce.rawValue, apiVersion: 9, headerVersion: ApiKey.produce.requestHeaderVersion(9),
                            clientId: clientId, body: body)
                        return (clock.now - sent, true)
                    }
                    continue
                }
                let answered = connection.enqueue(
                    apiKey: ApiKey.produce.rawValue, apiVersion: 9, headerVersion: ApiKey.produce.requestHeaderVersion(9),
                    responseHeaderVersion: ApiKey.produce.responseHeaderVersion(9), clientId: wire.clientId, body: body,
                    timeout: wire.timeout
                ).map { body in (clock.now, body) }
                group.addTask {
                    var (received, reply) = try await answered.get()
                    let response = try ProduceResponse(from: &reply, version: 9)
                    let ok = response.responses.first?.partitionResponses.first?.errorCode == 0
                    return (received - sent, ok)
                }
            }
            while let (latency, ok) = try await group.next() {
                if ok { result.latencies.append(latency); result.records += recordsPerBatch } else { result.errors += 1 }
            }
        }
        await wire.close()
        return result
    }

    private func makeRequest(topic: String, partition: Int32, sentAt: Duration, filler: ByteBuffer) throws -> ProduceRequest {
        var builder = RecordBatchBuilder(codec: Self.codecs[codec] ?? .none, expectedPayloadBytes: recordsPerBatch * (recordSize + 32))
        let nanos = Int64(sentAt.components.seconds) * 1_000_000_000 + sentAt.components.attoseconds / 1_000_000_000
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for _ in 0..<recordsPerBatch {
            var value = ByteBuffer()
            value.reserveCapacity(recordSize)
            value.writeInteger(nanos)
            var rest = filler
            value.writeBuffer(&rest)
            try builder.append(timestamp: now, key: nil, value: value)
        }
        return KafkaWire.produceRequest(topic: topic, partition: partition, batch: try builder.build().bytes, acks: acks)
    }

    private func latestOffset(_ wire: KafkaWire, _ endpoint: KafkaEndpoint, topic: String, partition: Int32) async throws -> Int64 {
        var part = ListOffsetsRequest.ListOffsetsPartition()
        part.partitionIndex = partition
        part.timestamp = -1
        var entry = ListOffsetsRequest.ListOffsetsTopic()
        entry.name = topic
        entry.partitions = [part]
        var request = ListOffsetsRequest()
        request.replicaId = -1
        request.topics = [entry]
        // A partition just created may still be being taken over by its leader: retry, bounded.
        var code: Int16 = -1
        for _ in 0..<300 {
            let response = try await wire.call(request, version: 7, to: endpoint, as: ListOffsetsResponse.self)
            guard let answer = response.topics.first?.partitions.first else { break }
            if answer.errorCode == 0 { return answer.offset }
            code = answer.errorCode
            try await Task.sleep(for: .milliseconds(20))
        }
        throw KafkaWire.Failure(description: "ListOffsets \(topic)-\(partition) failed with error \(code)")
    }

    private func consumeLoop(
        wire: KafkaWire, leaders: [Int32: (id: Int32, endpoint: KafkaEndpoint)], topic: String, from start: [Int32: Int64],
        origin: ContinuousClock.Instant, stop: StopFlag
    ) async throws -> [Duration] {
        let clock = ContinuousClock()
        var offsets = start
        var latencies: [Duration] = []
        let byLeader = Dictionary(grouping: leaders.keys.sorted(), by: { leaders[$0]!.id })
        // Bounded: the run's duration plus a drain margin.
        let hardEnd = clock.now.advanced(by: .milliseconds(Int64(duration * 1000) + 30_000))
        while !stop.value.load(ordering: .relaxed), clock.now < hardEnd {
            for (_, ids) in byLeader.sorted(by: { $0.key < $1.key }) {
                var request = FetchRequest()
                request.replicaId = -1
                request.maxWaitMs = 100
                request.minBytes = 1
                request.maxBytes = 64 << 20
                request.sessionEpoch = -1
                var entry = FetchRequest.FetchTopic()
                entry.topic = topic
                entry.partitions = ids.map { id in
                    var partition = FetchRequest.FetchPartition()
                    partition.partition = id
                    partition.fetchOffset = offsets[id] ?? 0
                    partition.partitionMaxBytes = 8 << 20
                    partition.currentLeaderEpoch = -1
                    return partition
                }
                request.topics = [entry]
                let response = try await wire.call(request, version: 12, to: leaders[ids[0]]!.endpoint, as: FetchResponse.self)
                let received = clock.now - origin
                for data in response.responses.first?.partitions ?? [] where data.errorCode == 0 {
                    var iterator = RecordSetIterator(data.records ?? ByteBuffer())
                    while let batch = try iterator.next() {
                        let first = offsets[data.partitionIndex] ?? 0
                        for record in try batch.records(maxUncompressedBytes: 256 << 20) {
                            let offset = batch.baseOffset + Int64(record.offsetDelta)
                            guard offset >= first, let nanos = record.value?.getInteger(at: record.value!.readerIndex, as: Int64.self) else { continue }
                            latencies.append(received - .nanoseconds(nanos))
                        }
                        offsets[data.partitionIndex] = max(first, batch.nextOffset)
                    }
                }
            }
        }
        await wire.close()
        return latencies
    }
}

/// Tells a background loop to finish.
final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

private func ms(_ d: Duration) -> String {
    String(format: "%.2f", inSeconds(d) * 1000)
}
