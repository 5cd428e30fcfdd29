import NIOCore
import Testing

@testable import KafkaRecords
import TestKit

/// Records with the awkward cases: null and empty keys/values, headers with null values,
/// tiny and large values, negative timestamp deltas.
func sampleRecords<G: RandomNumberGenerator>(count: Int, using rng: inout G) -> [(Int64, Record)] {
    (0..<count).map { index in
        let key: ByteBuffer? =
            switch index % 4 {
            case 0: nil
            case 1: ByteBuffer()
            default: ByteBuffer(string: "key-\(index)")
            }
        let value: ByteBuffer? =
            switch index % 5 {
            case 0: nil
            case 1: ByteBuffer()
            case 2: ByteBuffer(bytes: randomBytes(Int.random(in: 1_000...20_000, using: &rng), using: &rng))
            default: ByteBuffer(string: "{\"n\": \(index), \"text\": \"value \(index)\"}")
            }
        var headers: [RecordHeader] = []
        for h in 0..<(index % 3) {
            headers.append(RecordHeader(key: "h\(h)-é", value: h == 0 ? nil : ByteBuffer(string: "v\(h)")))
        }
        let timestamp = 1_700_000_000_000 + Int64.random(in: -5_000...5_000, using: &rng)
        return (timestamp, Record(timestampDelta: 0, offsetDelta: Int32(index), key: key, value: value, headers: headers))
    }
}

@Suite struct RecordBatchTests {
    @Test(arguments: CompressionCodec.allCases)
    func buildParseRoundTrip(codec: CompressionCodec) throws {
        var rng = SeededRandom(seed: 100 + UInt64(codec.rawValue))
        for count in [1, 2, 7, 500] {
            let records = sampleRecords(count: count, using: &rng)
            var builder = RecordBatchBuilder(
                codec: codec, producerId: 9_000, producerEpoch: 4, baseSequence: 77)
            for (timestamp, record) in records {
                try builder.append(timestamp: timestamp, key: record.key, value: record.value, headers: record.headers)
            }
            let built = try builder.build()
            #expect(built.verifyCRC())

            let (batches, partial) = try RecordBatch.parseRecordSet(built.bytes)
            #expect(partial == nil)
            try #require(batches.count == 1)
            let batch = batches[0]
            #expect(batch.header == built.header)
            #expect(batch.codec == codec)
            #expect(batch.recordCount == Int32(count))
            #expect(batch.lastOffsetDelta == Int32(count - 1))
            #expect(batch.producerId == 9_000 && batch.producerEpoch == 4 && batch.baseSequence == 77)
            #expect(batch.lastSequence == 77 + Int32(count) - 1)
            #expect(batch.baseTimestamp == records[0].0)
            #expect(batch.maxTimestamp == records.map(\.0).max())
            #expect(!batch.isTransactional && !batch.isControl && batch.timestampType == .createTime)

            let parsed = try batch.validate(maxUncompressedBytes: 64 << 20)
            try #require(parsed.count == count)
            for (index, record) in parsed.enumerated() {
                #expect(record.offsetDelta == Int32(index))
                #expect(record.offset(in: batch.header) == Int64(index))
                #expect(record.timestamp(in: batch.header) == records[index].0)
                #expect(record.key == records[index].1.key)
                #expect(record.value == records[index].1.value)
                #expect(record.headers == records[index].1.headers)
            }
        }
    }

    @Test func rawRecordsKeepTheirDeltas() throws {
        var builder = RecordBatchBuilder(codec: .lz4, baseTimestamp: 1_000)
        let records = [
            Record(attributes: 0, timestampDelta: -1_000_000, offsetDelta: 0, key: nil, value: ByteBuffer(string: "a")),
            Record(timestampDelta: Int64(Int32.max) * 4, offsetDelta: 3, key: ByteBuffer(string: "k"), value: nil),
            Record(timestampDelta: 0, offsetDelta: 9, key: nil, value: nil, headers: [RecordHeader(key: "", value: nil)]),
        ]
        for record in records { try builder.append(record) }
        let batch = try builder.build()
        #expect(try batch.records(maxUncompressedBytes: 1 << 20) == records)
        #expect(batch.lastOffsetDelta == 9)
        #expect(batch.maxTimestamp == 1_000 + Int64(Int32.max) * 4)
        // Gaps in offset deltas are legal after compaction but not on produce.
        #expect(throws: RecordBatchError.self) { try batch.validate(maxUncompressedBytes: 1 << 20) }
    }

    @Test func largeRecord() throws {
        var rng = SeededRandom(seed: 3)
        let big = jsonLikePayload(bytes: 3 << 20, using: &rng)
        for codec in CompressionCodec.allCases {
            var builder = RecordBatchBuilder(codec: codec)
            try builder.append(timestamp: 5, key: ByteBuffer(string: "big"), value: big)
            let batch = try builder.build()
            let records = try batch.validate(maxUncompressedBytes: 4 << 20)
            #expect(records.first?.value == big)
            #expect(throws: RecordBatchError.tooLarge(limit: 1 << 20)) {
                _ = try batch.records(maxUncompressedBytes: 1 << 20)
            }
        }
    }

    @Test func emptyBuilderThrows() {
        #expect(throws: RecordBatchError.self) { _ = try RecordBatchBuilder().build() }
    }

    @Test func controlBatches() throws {
        for type in [ControlRecordType.commit, .abort] {
            let marker = try RecordBatchBuilder.endTransactionMarker(
                type, producerId: 123, producerEpoch: 7, coordinatorEpoch: 42, timestamp: 1_700_000_000_000,
                baseOffset: 55, partitionLeaderEpoch: 3)
            let batch = try RecordBatch(bytes: marker.bytes)
            #expect(batch.verifyCRC())
            #expect(batch.isControl && batch.isTransactional)
            #expect(batch.producerId == 123 && batch.producerEpoch == 7 && batch.baseSequence == -1)
            #expect(batch.baseOffset == 55 && batch.partitionLeaderEpoch == 3)
            #expect(try batch.controlType() == type)
            let records = try batch.validate(maxUncompressedBytes: 1 << 10)
            try #require(records.count == 1)
            #expect(records[0].key?.bytesArray == [0, 0, 0, UInt8(type.rawValue)])
            let value = try EndTransactionMarker(parsing: records[0].value)
            #expect(value == EndTransactionMarker(version: 0, coordinatorEpoch: 42))
            #expect(records[0].value?.readableBytes == 6)
        }
        #expect(throws: RecordBatchError.self) {
            _ = try RecordBatchBuilder.endTransactionMarker(
                .leaderChange, producerId: 1, producerEpoch: 1, coordinatorEpoch: 1, timestamp: 0)
        }
        #expect(throws: RecordBatchError.self) { _ = try ControlRecordKey(parsing: ByteBuffer(bytes: [0, 0, 1])) }
        #expect(throws: RecordBatchError.self) { _ = try ControlRecordKey(parsing: nil) }
        #expect(throws: RecordBatchError.self) { _ = try EndTransactionMarker(parsing: ByteBuffer(bytes: [0, 0, 0])) }
        #expect(try ControlRecordKey(parsing: ByteBuffer(bytes: [0, 0, 0, 6])).type == .kraftVoters)

        var data = RecordBatchBuilder()
        try data.append(timestamp: 0, key: nil, value: ByteBuffer(string: "x"))
        #expect(try data.build().controlType() == nil)
    }

    @Test func stampingKeepsTheCRC() throws {
        var rng = SeededRandom(seed: 8)
        var set = ByteBuffer()
        var starts: [Int] = []
        for codec in CompressionCodec.allCases {
            var builder = RecordBatchBuilder(codec: codec)
            for (timestamp, record) in sampleRecords(count: 5, using: &rng) {
                try builder.append(timestamp: timestamp, key: record.key, value: record.value)
            }
            starts.append(set.writerIndex)
            set.writeImmutableBuffer(try builder.build().bytes)
        }
        var offset: Int64 = 1_000
        for start in starts {
            try RecordBatch.stamp(batchAt: start, in: &set, baseOffset: offset, partitionLeaderEpoch: 17)
            offset += 5
        }
        let (batches, _) = try RecordBatch.parseRecordSet(set)
        #expect(batches.map(\.baseOffset) == [1_000, 1_005, 1_010, 1_015, 1_020])
        #expect(batches.map(\.lastOffset) == [1_004, 1_009, 1_014, 1_019, 1_024])
        for batch in batches {
            #expect(batch.partitionLeaderEpoch == 17)
            #expect(batch.verifyCRC())
            let records = try batch.validate(maxUncompressedBytes: 1 << 20)
            #expect(records.last?.offset(in: batch.header) == batch.lastOffset)
        }
        #expect(throws: RecordBatchError.self) {
            try RecordBatch.stamp(batchAt: set.writerIndex - 10, in: &set, baseOffset: 0, partitionLeaderEpoch: 0)
        }
        #expect(throws: RecordBatchError.self) {
            try RecordBatch.stamp(batchAt: -1, in: &set, baseOffset: 0, partitionLeaderEpoch: 0)
        }
        let stamped = batches[0].stamped(baseOffset: 7, partitionLeaderEpoch: 8)
        #expect(stamped.baseOffset == 7 && stamped.partitionLeaderEpoch == 8 && stamped.verifyCRC())
        #expect(try RecordBatch(bytes: stamped.bytes).header == stamped.header)
    }

    @Test func logAppendTimeRecomputesTheCRC() throws {
        var builder = RecordBatchBuilder(codec: .zstd)
        try builder.append(timestamp: 10, key: nil, value: ByteBuffer(string: "a"))
        try builder.append(timestamp: 20, key: nil, value: ByteBuffer(string: "b"))
        let batch = try builder.build()
        var buffer = ByteBuffer(string: "prefix")
        let start = buffer.writerIndex
        buffer.writeImmutableBuffer(batch.bytes)
        try RecordBatch.setLogAppendTime(batchAt: start, in: &buffer, timestamp: 99_999)
        let updated = try RecordBatch(bytes: buffer.getSlice(at: start, length: buffer.writerIndex - start)!)
        #expect(updated.timestampType == .logAppendTime)
        #expect(updated.maxTimestamp == 99_999)
        #expect(updated.header.crc != batch.header.crc)
        #expect(updated.verifyCRC())
        let records = try updated.validate(maxUncompressedBytes: 1 << 10)
        #expect(records.map { $0.timestamp(in: updated.header) } == [99_999, 99_999])

        let viaInstance = try batch.withLogAppendTime(99_999)
        #expect(viaInstance.bytes == updated.bytes)

        // A batch that was already corrupt is not re-sealed.
        var corrupt = batch.bytes
        corrupt.setInteger(UInt8(0x55), at: corrupt.writerIndex - 1)
        #expect(throws: RecordBatchError.self) {
            try RecordBatch.setLogAppendTime(batchAt: 0, in: &corrupt, timestamp: 1)
        }
    }

    @Test func everyFlippedBitInTheCRCRangeIsDetected() throws {
        var rng = SeededRandom(seed: 21)
        for codec in [CompressionCodec.none, .snappy] {
            var builder = RecordBatchBuilder(codec: codec, producerId: 5, producerEpoch: 1, baseSequence: 0)
            for (timestamp, record) in sampleRecords(count: 3, using: &rng).prefix(2) {
                try builder.append(timestamp: timestamp, key: record.key, value: record.value, headers: record.headers)
            }
            let batch = try builder.build()
            let bytes = batch.bytes.bytesArray
            for byteIndex in RecordBatchHeader.Offset.attributes..<bytes.count {
                for bit in 0..<8 {
                    var flipped = bytes
                    flipped[byteIndex] ^= UInt8(1 << bit)
                    // A flip may make the header structurally invalid (codec bits); either way it is rejected.
                    if let mutated = try? RecordBatch(bytes: ByteBuffer(bytes: flipped)) {
                        #expect(!mutated.verifyCRC(), "byte \(byteIndex) bit \(bit)")
                        #expect(throws: RecordBatchError.self) { try mutated.validate(maxUncompressedBytes: 1 << 20) }
                    }
                }
            }
            // Fields outside the CRC do not affect it.
            var outside = bytes
            outside[3] ^= 0xFF
            outside[13] ^= 0x01
            #expect(try RecordBatch(bytes: ByteBuffer(bytes: outside)).verifyCRC())
        }
    }

    @Test func recordSetIteration() throws {
        var builder = RecordBatchBuilder(codec: .gzip)
        try builder.append(timestamp: 1, key: nil, value: ByteBuffer(string: "one"))
        let one = try builder.build().bytes
        var set = ByteBuffer()
        set.writeImmutableBuffer(one)
        set.writeImmutableBuffer(one)
        for cut in [0, 1, 11, 12, 17, 60, 61, one.readableBytes - 1] {
            var truncated = set
            truncated.moveWriterIndex(to: one.readableBytes + cut)
            let (batches, partial) = try RecordBatch.parseRecordSet(truncated)
            #expect(batches.count == 1)
            #expect(partial?.readableBytes == (cut == 0 ? nil : cut))
        }
        // Zero-copy: the batch's bytes view the record set's storage.
        let (batches, _) = try RecordBatch.parseRecordSet(set)
        #expect(batches.count == 2)
        batches[1].bytes.withUnsafeReadableBytes { batchBytes in
            set.withUnsafeReadableBytes { setBytes in
                #expect(batchBytes.baseAddress == setBytes.baseAddress! + one.readableBytes)
            }
        }

        var tooShort = one
        tooShort.setInteger(Int32(48), at: 8)
        #expect(throws: RecordBatchError.self) { _ = try RecordBatch.parseRecordSet(tooShort) }
        var badMagic = one
        badMagic.setInteger(Int8(1), at: 16)
        #expect(throws: RecordBatchError.unsupportedMagic(1)) { _ = try RecordBatch.parseRecordSet(badMagic) }
        #expect(throws: RecordBatchError.tooLarge(limit: 50)) {
            _ = try RecordBatch.parseRecordSet(one, maxBatchBytes: 50)
        }
        var badCodec = one
        badCodec.setInteger(Int16(6), at: 21)
        #expect(throws: RecordBatchError.unsupportedCodec(6)) { _ = try RecordBatch.parseRecordSet(badCodec) }
        var hugeLength = one
        hugeLength.setInteger(Int32.max, at: 8)
        let (none, partial) = try RecordBatch.parseRecordSet(hugeLength)
        #expect(none.isEmpty && partial?.readableBytes == one.readableBytes)
        #expect(try RecordBatch.parseRecordSet(ByteBuffer()).batches.isEmpty)
    }

    @Test func headerReadsWithoutConsuming() throws {
        var builder = RecordBatchBuilder(codec: .none, baseOffset: 3, partitionLeaderEpoch: 2)
        try builder.append(timestamp: 1, key: nil, value: nil)
        let bytes = try builder.build().bytes
        let header = try RecordBatchHeader(from: bytes)
        #expect(header.baseOffset == 3 && header.partitionLeaderEpoch == 2 && header.magic == 2)
        #expect(header.totalSize == bytes.readableBytes)
        var rewritten = ByteBuffer()
        header.write(to: &rewritten)
        #expect(rewritten.bytesArray == Array(bytes.bytesArray.prefix(RecordBatchHeader.size)))
        #expect(throws: RecordBatchError.self) { _ = try RecordBatchHeader(from: bytes.getSlice(at: 0, length: 60)!) }
    }
}

@Suite struct ForeignBatchTests {
    /// The records make_fixtures.py writes into every batch fixture.
    static let expected: [Record] = [
        Record(timestampDelta: 0, offsetDelta: 0, key: ByteBuffer(string: "k0"), value: ByteBuffer(string: "v0"),
               headers: [RecordHeader(key: "h", value: ByteBuffer(string: "x"))]),
        Record(timestampDelta: 5, offsetDelta: 1, key: nil, value: ByteBuffer(string: "value-1"),
               headers: [RecordHeader(key: "n", value: nil), RecordHeader(key: "été", value: ByteBuffer())]),
        Record(timestampDelta: -3, offsetDelta: 2, key: ByteBuffer(string: "k2"), value: nil),
    ]

    @Test(arguments: [
        ("batch-none.bin", CompressionCodec.none), ("batch-gzip.bin", .gzip), ("batch-snappy.bin", .snappy),
        ("batch-lz4.bin", .lz4), ("batch-zstd.bin", .zstd),
    ])
    func decodesPythonBuiltBatch(name: String, codec: CompressionCodec) throws {
        let (batches, partial) = try RecordBatch.parseRecordSet(try fixture(name))
        #expect(partial == nil)
        let batch = try #require(batches.first)
        #expect(batch.codec == codec)
        #expect(batch.verifyCRC())
        #expect(batch.producerId == 42 && batch.producerEpoch == 3 && batch.baseSequence == 7)
        #expect(batch.baseTimestamp == 1_700_000_000_000 && batch.maxTimestamp == 1_700_000_000_005)
        #expect(try batch.validate(maxUncompressedBytes: 1 << 10) == Self.expected)
    }

    @Test func uncompressedBuildMatchesPythonByteForByte() throws {
        var builder = RecordBatchBuilder(
            codec: .none, producerId: 42, producerEpoch: 3, baseSequence: 7, baseTimestamp: 1_700_000_000_000)
        for record in Self.expected { try builder.append(record) }
        #expect(try builder.build().bytes == fixture("batch-none.bin"))
    }
}

@Suite struct RecordDetailTests {
    @Test func sequenceWrapsLikeKafka() {
        let header = RecordBatchHeader(lastOffsetDelta: 4, baseSequence: Int32.max - 1)
        // Sequences Int32.max-1, Int32.max, 0, 1, 2.
        #expect(header.lastSequence == 2)
        #expect(RecordBatchHeader(lastOffsetDelta: 4, baseSequence: 10).lastSequence == 14)
        #expect(RecordBatchHeader(lastOffsetDelta: 4, baseSequence: -1).lastSequence == -1)
    }

    @Test func uncompressedRecordsAreSlicesOfTheBatch() throws {
        var builder = RecordBatchBuilder()
        try builder.append(timestamp: 1, key: ByteBuffer(string: "key"), value: ByteBuffer(string: "value"))
        let batch = try builder.build()
        let record = try #require(try batch.records(maxUncompressedBytes: 1 << 10).first)
        let value = try #require(record.value)
        value.withUnsafeReadableBytes { valueBytes in
            batch.bytes.withUnsafeReadableBytes { batchBytes in
                let start = batchBytes.baseAddress!
                #expect(valueBytes.baseAddress! > start && valueBytes.baseAddress! < start + batchBytes.count)
            }
        }
    }

    @Test func malformedRecordsAreCorruptNotCrashes() throws {
        var builder = RecordBatchBuilder()
        try builder.append(timestamp: 1, key: ByteBuffer(string: "k"), value: ByteBuffer(string: "v"))
        let good = try builder.build().bytes.bytesArray
        // First record: length varint at 61, then attributes, ts delta, offset delta, key length at 65.
        var cases: [[UInt8]] = []
        var negativeKeyLength = good
        negativeKeyLength[65] = 0x05  // zig-zag -3
        cases.append(negativeKeyLength)
        var longRecord = good
        longRecord[61] = 0x7E  // record claims 63 bytes
        cases.append(longRecord)
        var extraRecord = good
        extraRecord[RecordBatchHeader.Offset.recordCount + 3] = 2
        cases.append(extraRecord)
        var trailing = good + [0]
        trailing[RecordBatchHeader.Offset.batchLength + 3] += 1
        cases.append(trailing)
        for bytes in cases {
            let batch = try RecordBatch(bytes: ByteBuffer(bytes: bytes))
            #expect(throws: RecordBatchError.self) { _ = try batch.records(maxUncompressedBytes: 1 << 10) }
        }
        var headerBuilder = RecordBatchBuilder()
        try headerBuilder.append(
            timestamp: 1, key: nil, value: nil, headers: [RecordHeader(key: "ab", value: nil)])
        var invalidKey = try headerBuilder.build().bytes.bytesArray
        let at = try #require(invalidKey.lastIndex(of: UInt8(ascii: "a")))
        invalidKey[at] = 0xFF
        let batch = try RecordBatch(bytes: ByteBuffer(bytes: invalidKey))
        #expect(throws: RecordBatchError.corrupt("string is not valid UTF-8")) {
            _ = try batch.records(maxUncompressedBytes: 1 << 10)
        }
        #expect(RecordBatchError.corrupt("x").kafkaErrorCode == 2)
    }
}
