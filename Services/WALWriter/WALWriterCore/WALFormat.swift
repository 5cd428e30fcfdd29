import KafkaRecords
import NIOCore

/// Log sequence number: the position of a record in the WAL, one per record, never reused.
public typealias LSN = UInt64

/// Errors of the WAL engine.
public enum WALError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The append carries an older epoch than the stream's.
    case fenced(stream: UInt64, currentEpoch: Int32)
    /// The append does not start at the stream's end.
    case offsetMismatch(stream: UInt64, expectedBaseOffset: Int64)
    /// Offsets are malformed (last before base, negative).
    case invalidOffsets(stream: UInt64, baseOffset: Int64, lastOffset: Int64)
    /// The record does not fit in a segment or exceeds the buffer limit.
    case tooLarge(bytes: Int, limit: Int)
    /// The requested offset is no longer (or not yet) held by this WAL.
    case offsetNotInWAL(stream: UInt64, offset: Int64)
    /// A trim would drop data that the uploader has not reported as committed.
    case trimUncommitted(stream: UInt64, committedEnd: Int64?, needed: Int64)
    /// A trim point beyond the durable end of the log.
    case trimBeyondDurable(requested: LSN, durableEnd: LSN)
    /// A system call on the volume failed; the engine stops accepting writes.
    case volume(operation: String, errno: Int32)
    /// The volume holds an inconsistent layout (e.g. a missing segment).
    case corruptVolume(String)
    /// The engine failed earlier or was closed.
    case unavailable(String)

    public var description: String {
        switch self {
        case .fenced(let s, let e): "stream \(s) fenced: current epoch \(e)"
        case .offsetMismatch(let s, let o): "stream \(s): expected base offset \(o)"
        case .invalidOffsets(let s, let b, let l): "stream \(s): invalid offsets \(b)...\(l)"
        case .tooLarge(let b, let l): "record of \(b) bytes exceeds limit \(l)"
        case .offsetNotInWAL(let s, let o): "stream \(s): offset \(o) not held by this WAL"
        case .trimUncommitted(let s, let c, let n):
            "trim would drop uncommitted data of stream \(s) (committed end \(c.map(String.init) ?? "unknown"), needed \(n))"
        case .trimBeyondDurable(let r, let d): "trim point \(r) beyond durable end \(d)"
        case .volume(let op, let e): "\(op) failed: errno \(e)"
        case .corruptVolume(let m): "corrupt volume: \(m)"
        case .unavailable(let m): "WAL unavailable: \(m)"
        }
    }
}

/// On-disk layout of segments and records.
///
/// A segment starts with a header naming its sequence number and the LSN of its first record.
/// Records follow back to back: `[type u8][length u32][lsn u64][crc32c u32][payload]`, the CRC
/// covering the segment sequence, type, length, LSN and payload. Recovery accepts a record only
/// if its LSN is the next expected one, so bytes left from older data can never pass as current.
public enum WALFormat {
    static let segmentMagic: UInt64 = 0x464C_4F45_5741_4C31  // "FLOEWAL1"
    static let version: UInt32 = 1
    /// Size of the segment header.
    public static let segmentHeaderSize = 32
    /// Size of a record header.
    public static let recordHeaderSize = 17
    /// Fixed part of an append payload (stream, epoch, base, last).
    public static let appendPayloadFixed = 28
    /// Payload size of a fence record.
    public static let fencePayloadSize = 12

    /// Record types.
    public enum RecordType: UInt8, Sendable {
        case append = 1
        case fence = 2
    }

    /// A decoded record.
    public enum Record: Equatable, Sendable {
        case append(stream: UInt64, epoch: Int32, baseOffset: Int64, lastOffset: Int64, batches: ByteBuffer)
        case fence(stream: UInt64, epoch: Int32)
    }

    /// Encoded size of a record whose batch bytes are `batchBytes` long (nil for a fence).
    public static func encodedSize(batchBytes: Int?) -> Int {
        recordHeaderSize + (batchBytes.map { appendPayloadFixed + $0 } ?? fencePayloadSize)
    }

    /// Writes a segment header.
    public static func writeSegmentHeader(into buffer: inout ByteBuffer, sequence: UInt64, firstLSN: LSN) {
        let start = buffer.writerIndex
        buffer.writeInteger(segmentMagic, endianness: .big)
        buffer.writeInteger(version, endianness: .big)
        buffer.writeInteger(sequence, endianness: .big)
        buffer.writeInteger(firstLSN, endianness: .big)
        let crc = CRC32C.checksum(buffer.getSlice(at: start, length: 28)!)
        buffer.writeInteger(crc, endianness: .big)
    }

    /// Parses a segment header; nil when it is not a valid header.
    public static func readSegmentHeader(_ bytes: UnsafeRawBufferPointer) -> (sequence: UInt64, firstLSN: LSN)? {
        guard bytes.count >= segmentHeaderSize else { return nil }
        guard bigEndian(bytes, 0, as: UInt64.self) == segmentMagic,
              bigEndian(bytes, 8, as: UInt32.self) == version else { return nil }
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<28]))
        guard crc == bigEndian(bytes, 28, as: UInt32.self) else { return nil }
        return (bigEndian(bytes, 12, as: UInt64.self), bigEndian(bytes, 20, as: UInt64.self))
    }

    /// Appends one encoded record to `buffer`.
    public static func writeRecord(_ record: Record, lsn: LSN, segment: UInt64, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        let type: RecordType
        let payloadLength: Int
        switch record {
        case .append(_, _, _, _, let batches):
            type = .append
            payloadLength = appendPayloadFixed + batches.readableBytes
        case .fence:
            type = .fence
            payloadLength = fencePayloadSize
        }
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(UInt32(payloadLength), endianness: .big)
        buffer.writeInteger(lsn, endianness: .big)
        let crcIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0), endianness: .big)
        switch record {
        case .append(let stream, let epoch, let base, let last, let batches):
            buffer.writeInteger(stream, endianness: .big)
            buffer.writeInteger(epoch, endianness: .big)
            buffer.writeInteger(base, endianness: .big)
            buffer.writeInteger(last, endianness: .big)
            buffer.writeImmutableBuffer(batches)
        case .fence(let stream, let epoch):
            buffer.writeInteger(stream, endianness: .big)
            buffer.writeInteger(epoch, endianness: .big)
        }
        var crc = segmentSeed(segment)
        crc = CRC32C.checksum(buffer.getSlice(at: start, length: 13)!, continuing: crc)
        crc = CRC32C.checksum(buffer.getSlice(at: crcIndex + 4, length: payloadLength)!, continuing: crc)
        buffer.setInteger(crc, at: crcIndex, endianness: .big)
    }

    /// Outcome of decoding at one position of a segment.
    public enum Decoded: Equatable, Sendable {
        case record(Record, size: Int)
        /// Torn, corrupt, zeroed or stale bytes: the log ends here.
        case end
    }

    /// Decodes the record at `position` if it is intact and carries `expectedLSN`.
    public static func decodeRecord(
        _ bytes: UnsafeRawBufferPointer, at position: Int, expectedLSN: LSN, segment: UInt64
    ) -> Decoded {
        guard position >= 0, bytes.count - position >= recordHeaderSize else { return .end }
        guard let type = RecordType(rawValue: bytes[position]) else { return .end }
        let length = Int(bigEndian(bytes, position + 1, as: UInt32.self))
        guard length <= bytes.count - position - recordHeaderSize else { return .end }
        guard bigEndian(bytes, position + 5, as: UInt64.self) == expectedLSN else { return .end }
        let payloadStart = position + recordHeaderSize
        let payload = UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<(payloadStart + length)])
        var crc = segmentSeed(segment)
        crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[position..<(position + 13)]), continuing: crc)
        crc = CRC32C.checksum(payload, continuing: crc)
        guard crc == bigEndian(bytes, position + 13, as: UInt32.self) else { return .end }
        let size = recordHeaderSize + length
        switch type {
        case .append:
            guard length >= appendPayloadFixed else { return .end }
            let stream = bigEndian(payload, 0, as: UInt64.self)
            let epoch = Int32(bitPattern: bigEndian(payload, 8, as: UInt32.self))
            let base = Int64(bitPattern: bigEndian(payload, 12, as: UInt64.self))
            let last = Int64(bitPattern: bigEndian(payload, 20, as: UInt64.self))
            // Never written by the engine (it refuses such offsets): treat as damage.
            guard base >= 0, last >= base, last < Int64.max else { return .end }
            let batches = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: payload[appendPayloadFixed...]))
            return .record(.append(stream: stream, epoch: epoch, baseOffset: base, lastOffset: last, batches: batches), size: size)
        case .fence:
            guard length == fencePayloadSize else { return .end }
            let stream = bigEndian(payload, 0, as: UInt64.self)
            let epoch = Int32(bitPattern: bigEndian(payload, 8, as: UInt32.self))
            return .record(.fence(stream: stream, epoch: epoch), size: size)
        }
    }

    /// Mixes the segment sequence into every record CRC so a record copied between segments fails.
    static func segmentSeed(_ segment: UInt64) -> UInt32 {
        withUnsafeBytes(of: segment.bigEndian) { CRC32C.checksum($0) }
    }

    static func bigEndian<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ offset: Int, as: T.Type) -> T {
        T(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
