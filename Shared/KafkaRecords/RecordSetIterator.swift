import NIOCore

/// Walks a record set (concatenated v2 batches) yielding zero-copy batches. A trailing partial
/// batch (a Fetch response cut at its size limit) ends the walk and is exposed in
/// `partialBatch` instead of being an error.
public struct RecordSetIterator: Sendable {
    private var remaining: ByteBuffer
    private var finished = false
    /// Batches larger than this are rejected (a broker passes its max.message.bytes).
    public let maxBatchBytes: Int
    /// The incomplete bytes at the end of the set, once `next()` has returned nil.
    public private(set) var partialBatch: ByteBuffer?

    /// An iterator over `recordSet`, rejecting batches larger than `maxBatchBytes`.
    public init(_ recordSet: ByteBuffer, maxBatchBytes: Int = Int.max) {
        self.remaining = recordSet
        self.maxBatchBytes = maxBatchBytes
    }

    /// The next complete batch, or nil at the end (check `partialBatch`). Bad lengths and
    /// magic values throw, after which the iterator stays finished.
    public mutating func next() throws(RecordBatchError) -> RecordBatch? {
        guard !finished, remaining.readableBytes > 0 else {
            finished = true
            return nil
        }
        do {
            return try advance()
        } catch {
            finished = true
            throw error
        }
    }

    private mutating func advance() throws(RecordBatchError) -> RecordBatch? {
        let start = remaining.readerIndex
        let available = remaining.readableBytes
        guard available >= RecordBatchHeader.logOverhead,
            let batchLength = remaining.getInteger(
                at: start + RecordBatchHeader.Offset.batchLength, endianness: .big, as: Int32.self)
        else {
            return endWithPartial()
        }
        guard batchLength >= RecordBatchHeader.minimumBatchLength else {
            throw .corrupt("batch length \(batchLength) below \(RecordBatchHeader.minimumBatchLength)")
        }
        let total = Int(batchLength) + RecordBatchHeader.logOverhead
        guard total <= maxBatchBytes else { throw .tooLarge(limit: maxBatchBytes) }
        if available > RecordBatchHeader.Offset.magic,
            let magic = remaining.getInteger(at: start + RecordBatchHeader.Offset.magic, as: Int8.self),
            magic != RecordBatchHeader.currentMagic
        {
            throw .unsupportedMagic(magic)
        }
        guard available >= total, let slice = remaining.readSlice(length: total) else {
            return endWithPartial()
        }
        return try RecordBatch(bytes: slice)
    }

    private mutating func endWithPartial() -> RecordBatch? {
        partialBatch = remaining
        remaining.moveReaderIndex(forwardBy: remaining.readableBytes)
        finished = true
        return nil
    }
}

extension RecordBatch {
    /// An iterator over the batches of a record set (see `RecordSetIterator`).
    public static func batches(in recordSet: ByteBuffer, maxBatchBytes: Int = Int.max) -> RecordSetIterator {
        RecordSetIterator(recordSet, maxBatchBytes: maxBatchBytes)
    }

    /// Every complete batch of a record set plus the trailing partial batch, if any.
    public static func parseRecordSet(
        _ recordSet: ByteBuffer, maxBatchBytes: Int = Int.max
    ) throws(RecordBatchError) -> (batches: [RecordBatch], partial: ByteBuffer?) {
        var iterator = batches(in: recordSet, maxBatchBytes: maxBatchBytes)
        var result: [RecordBatch] = []
        while let batch = try iterator.next() {
            result.append(batch)
        }
        return (result, iterator.partialBatch)
    }
}
