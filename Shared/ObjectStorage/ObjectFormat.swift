import CCRC32C
import NIOCore

/// Layout constants of Floe's object format.
///
/// An object is: data blocks (each the concatenated record batches of one stream), then the index
/// (`UInt32` entry count, then fixed-size entries), then a fixed footer:
/// `indexPosition u64 | indexLength u32 | version u16 | reserved u16 | crc32c u32 | magic 8 bytes`.
/// The footer's CRC32C covers the index bytes and the footer fields before it; each index entry
/// carries the CRC32C of its block. All integers are big-endian.
public enum ObjectFormat {
    /// Last eight bytes of every object.
    public static let magic: [UInt8] = Array("FLOEOBJ1".utf8)
    /// The only version this code writes and reads.
    public static let version: UInt16 = 1
    /// Size of the footer in bytes.
    public static let footerSize = 28
    /// Size of one index entry in bytes.
    public static let indexEntrySize = 52
    /// Default bound on a block's size; a single batch larger than this gets a block of its own.
    public static let defaultBlockSize = 1 << 20
    /// How many trailing bytes a reader fetches first, hoping footer and index fit.
    public static let defaultTailRead = 64 << 10

    static func crc32c(_ buffer: ByteBuffer, crc: UInt32 = 0) -> UInt32 {
        buffer.withUnsafeReadableBytes { floe_crc32c(crc, $0.baseAddress, $0.count) }
    }
}

/// One index entry: where a block is and which offsets of which stream it holds.
public struct BlockIndexEntry: Hashable, Sendable {
    public var streamID: UInt64
    /// Base offset of the block's first batch.
    public var firstOffset: Int64
    /// One past the last offset of the block's last batch.
    public var endOffset: Int64
    public var recordCount: Int32
    /// Largest batch max-timestamp in the block.
    public var maxTimestamp: Int64
    /// Byte position of the block in the object.
    public var position: UInt64
    /// Block length in bytes.
    public var length: UInt32
    /// CRC32C of the block's bytes.
    public var crc: UInt32

    public init(streamID: UInt64, firstOffset: Int64, endOffset: Int64, recordCount: Int32, maxTimestamp: Int64, position: UInt64, length: UInt32, crc: UInt32) {
        self.streamID = streamID
        self.firstOffset = firstOffset
        self.endOffset = endOffset
        self.recordCount = recordCount
        self.maxTimestamp = maxTimestamp
        self.position = position
        self.length = length
        self.crc = crc
    }

    /// The byte range of the block in the object.
    public var byteRange: Range<Int> { Int(position)..<(Int(position) + Int(length)) }
}

/// Errors from building an object.
public enum ObjectWriterError: Error, Equatable, Sendable {
    /// Offsets must be non-empty ranges and grow within a stream.
    case offsetsOutOfOrder(streamID: UInt64, firstOffset: Int64, previousEnd: Int64)
    case invalidBatch(String)
    /// The object would exceed the format's limits (index length or block length in 32 bits).
    case tooLarge
}

/// Builds one object in memory from record batches. Batches of a stream are appended in offset
/// order; consecutive batches of the same stream share a block until it reaches the block size.
public struct ObjectWriter: Sendable {
    /// The bound on each block's size.
    public let blockSize: Int
    private var data: ByteBuffer
    private var entries: [BlockIndexEntry] = []
    private var open: BlockIndexEntry?
    private var openStart = 0
    private var streamEnds: [UInt64: Int64] = [:]

    public init(blockSize: Int = ObjectFormat.defaultBlockSize, expectedBytes: Int = 0) {
        // Block lengths are stored in 32 bits.
        self.blockSize = min(max(1, blockSize), Int(UInt32.max))
        // Room for a typical index and footer too, so sealing does not reallocate the object.
        self.data = ByteBufferAllocator().buffer(capacity: expectedBytes > 0 ? expectedBytes + 4096 : 0)
    }

    /// Bytes written so far (blocks only).
    public var size: Int { data.readableBytes }
    /// Whether nothing has been appended.
    public var isEmpty: Bool { data.readableBytes == 0 }

    /// Appends the bytes of one or more whole batches of `streamID` covering `[firstOffset, endOffset)`.
    public mutating func append(
        streamID: UInt64, firstOffset: Int64, endOffset: Int64, recordCount: Int32, maxTimestamp: Int64, batches: ByteBuffer
    ) throws(ObjectWriterError) {
        guard endOffset > firstOffset else {
            throw .invalidBatch("empty offset range \(firstOffset)..<\(endOffset) for stream \(streamID)")
        }
        guard recordCount >= 0, batches.readableBytes > 0 else { throw .invalidBatch("empty batch for stream \(streamID)") }
        if let previousEnd = streamEnds[streamID], firstOffset < previousEnd {
            throw .offsetsOutOfOrder(streamID: streamID, firstOffset: firstOffset, previousEnd: previousEnd)
        }
        guard batches.readableBytes <= Int(UInt32.max) else { throw .tooLarge }
        if let current = open, current.streamID != streamID || data.readableBytes - openStart + batches.readableBytes > blockSize {
            closeBlock()
        }
        let (newCount, overflow) = (open?.recordCount ?? 0).addingReportingOverflow(recordCount)
        if overflow { closeBlock() }
        if var current = open {
            current.endOffset = endOffset
            current.recordCount = overflow ? recordCount : newCount
            current.maxTimestamp = max(current.maxTimestamp, maxTimestamp)
            open = current
        } else {
            openStart = data.readableBytes
            open = BlockIndexEntry(
                streamID: streamID, firstOffset: firstOffset, endOffset: endOffset, recordCount: recordCount,
                maxTimestamp: maxTimestamp, position: UInt64(openStart), length: 0, crc: 0
            )
        }
        data.writeImmutableBuffer(batches)
        streamEnds[streamID] = endOffset
    }

    private mutating func closeBlock() {
        guard var current = open else { return }
        let length = data.readableBytes - openStart
        current.length = UInt32(length)
        current.crc = ObjectFormat.crc32c(data.getSlice(at: data.readerIndex + openStart, length: length) ?? ByteBuffer())
        entries.append(current)
        open = nil
    }

    /// Seals the object: the blocks, the index and the footer, ready to upload. Call once: the bytes move into the result.
    public mutating func finish() throws(ObjectWriterError) -> ByteBuffer {
        closeBlock()
        let indexLength = 4 + entries.count * ObjectFormat.indexEntrySize
        guard indexLength <= Int(UInt32.max), entries.count <= Int(UInt32.max) else { throw .tooLarge }
        // Taken, not shared: writing the index into a buffer `data` still referenced would copy the whole object.
        var object = data
        data = ByteBuffer()
        let indexPosition = object.readableBytes
        object.reserveCapacity(minimumWritableBytes: indexLength + ObjectFormat.footerSize)
        object.writeInteger(UInt32(entries.count))
        for entry in entries {
            object.writeInteger(entry.streamID)
            object.writeInteger(entry.firstOffset)
            object.writeInteger(entry.endOffset)
            object.writeInteger(entry.recordCount)
            object.writeInteger(entry.maxTimestamp)
            object.writeInteger(entry.position)
            object.writeInteger(entry.length)
            object.writeInteger(entry.crc)
        }
        object.writeInteger(UInt64(indexPosition))
        object.writeInteger(UInt32(indexLength))
        object.writeInteger(ObjectFormat.version)
        object.writeInteger(UInt16(0))
        let covered = object.getSlice(at: object.readerIndex + indexPosition, length: indexLength + 16) ?? ByteBuffer()
        object.writeInteger(ObjectFormat.crc32c(covered))
        object.writeBytes(ObjectFormat.magic)
        return object
    }
}
