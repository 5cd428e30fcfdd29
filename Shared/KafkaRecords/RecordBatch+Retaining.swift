import NIOCore

extension RecordBatch {
    /// The batch with only `records` (a subset of its own, in order) left, as Kafka's log cleaner
    /// writes it: the same base offset, last offset delta, timestamps, producer fields, attributes
    /// and codec, so offsets and idempotent-producer state are unchanged; the record count, length
    /// and CRC follow the new contents. An empty `records` gives a batch with no records, which
    /// Kafka keeps to carry a producer's last sequence.
    public func retaining(_ records: [Record]) throws(RecordBatchError) -> RecordBatch {
        var payload = ByteBufferAllocator().buffer(capacity: max(64, bytes.readableBytes - RecordBatchHeader.size))
        for record in records {
            guard record.write(to: &payload) else { throw .tooLarge(limit: Int(Int32.max)) }
        }
        let body = records.isEmpty ? payload : try Compression.compress(codec, payload)
        let batchLength = Int(RecordBatchHeader.minimumBatchLength) + body.readableBytes
        guard batchLength <= Int(Int32.max) else { throw .tooLarge(limit: Int(Int32.max)) }
        var rewritten = header
        rewritten.batchLength = Int32(batchLength)
        rewritten.recordCount = Int32(records.count)
        if records.isEmpty { rewritten.attributes &= ~RecordBatchHeader.Attribute.codecMask }
        var out = ByteBufferAllocator().buffer(capacity: RecordBatchHeader.size + body.readableBytes)
        rewritten.write(to: &out)
        out.writeImmutableBuffer(body)
        rewritten.crc = out.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[RecordBatchHeader.Offset.attributes...]))
        }
        out.setInteger(rewritten.crc, at: RecordBatchHeader.Offset.crc, endianness: .big)
        return RecordBatch(validatedHeader: rewritten, bytes: out)
    }
}
