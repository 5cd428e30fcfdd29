import CLZ4
import CSnappy
import CZlib
import CZstd
import NIOCore

/// The compression codec of a record batch (attribute bits 0-2).
public enum CompressionCodec: Int16, Sendable, CaseIterable, CustomStringConvertible {
    /// No compression.
    case none = 0
    /// gzip (deflate with the gzip wrapper).
    case gzip = 1
    /// Snappy (xerial framing or a raw block).
    case snappy = 2
    /// The LZ4 frame format.
    case lz4 = 3
    /// Zstandard frames.
    case zstd = 4

    public var description: String {
        switch self {
        case .none: "none"
        case .gzip: "gzip"
        case .snappy: "snappy"
        case .lz4: "lz4"
        case .zstd: "zstd"
        }
    }
}

/// Compression and bounded decompression of record-batch payloads in the formats Kafka clients use.
public enum Compression {
    /// Compresses `input` the way the Java client does for the codec (xerial framing for snappy,
    /// LZ4 frames with independent 64 KiB blocks, gzip wrapper for deflate, plain zstd frames).
    public static func compress(_ codec: CompressionCodec, _ input: ByteBuffer) throws(RecordBatchError) -> ByteBuffer {
        do {
            switch codec {
            case .none: return input
            case .gzip: return try gzipCompress(input)
            case .snappy: return try snappyCompress(input)
            case .lz4: return try lz4Compress(input)
            case .zstd: return try zstdCompress(input)
            }
        } catch let error as RecordBatchError {
            throw error
        } catch {
            throw .decompressionFailed(codec, "\(error)")
        }
    }

    /// Decompresses `input`, producing at most `maxOutputBytes`; a stream that would produce more
    /// throws `.tooLarge` before any further memory is committed.
    public static func decompress(
        _ codec: CompressionCodec, _ input: ByteBuffer, maxOutputBytes: Int
    ) throws(RecordBatchError) -> ByteBuffer {
        let limit = max(0, maxOutputBytes)
        if codec == .none {
            guard input.readableBytes <= limit else { throw .tooLarge(limit: limit) }
            return input
        }
        guard input.readableBytes > 0 else { throw .decompressionFailed(codec, "empty input") }
        switch codec {
        case .none: return input
        case .gzip: return try gzipDecompress(input, limit: limit)
        case .snappy: return try snappyDecompress(input, limit: limit)
        case .lz4: return try lz4Decompress(input, limit: limit)
        case .zstd: return try zstdDecompress(input, limit: limit)
        }
    }
}

// MARK: - Bounded output

/// A growing output buffer that never exceeds `limit`. When the limit is reached, codecs are
/// handed a one-byte scratch area: any byte they produce there proves the stream is too large.
struct CappedOutput {
    var buffer: ByteBuffer
    let limit: Int

    init(limit: Int, expected: Int) {
        self.limit = limit
        self.buffer = ByteBufferAllocator().buffer(capacity: max(256, min(limit, expected)))
    }

    /// Runs `body` with a destination pointer and room; `body` returns how many bytes it wrote.
    mutating func produce<R>(
        _ body: (UnsafeMutablePointer<UInt8>, Int) -> (produced: Int, result: R)
    ) throws(RecordBatchError) -> R {
        let allowance = limit - buffer.writerIndex
        if allowance <= 0 {
            var probe: UInt8 = 0
            let (produced, result) = withUnsafeMutablePointer(to: &probe) { body($0, 1) }
            if produced > 0 { throw .tooLarge(limit: limit) }
            return result
        }
        if buffer.writableBytes == 0 {
            buffer.reserveCapacity(minimumWritableBytes: min(allowance, max(buffer.capacity, 64 * 1024)))
        }
        let room = min(buffer.writableBytes, allowance)
        let (produced, result) = buffer.withUnsafeMutableWritableBytes { raw -> (Int, R?) in
            guard let base = raw.baseAddress, room > 0, raw.count >= room else { return (0, nil) }
            let (produced, result) = body(base.assumingMemoryBound(to: UInt8.self), room)
            return (produced, result)
        }
        guard let result else { throw .corrupt("cannot reserve decompression output") }
        buffer.moveWriterIndex(forwardBy: produced)
        return result
    }
}

/// An initial output size: the size the stream declares, trusted only up to a ratio real data
/// reaches, so a lying header cannot make a small input reserve a large buffer up front.
func expectedSize(declared: Int?, _ input: ByteBuffer) -> Int {
    let plausible = max(64 * 1024, input.readableBytes > Int.max / 256 ? Int.max : input.readableBytes * 256)
    guard let declared, declared > 0 else { return input.readableBytes * 4 }
    return min(declared, plausible)
}

/// The gzip trailer's ISIZE (input size mod 2^32) of the last member, as a size hint.
func gzipTrailerSize(_ input: ByteBuffer) -> Int? {
    guard input.readableBytes >= 18,
        let size = input.getInteger(at: input.writerIndex - 4, endianness: .little, as: UInt32.self)
    else { return nil }
    return Int(size)
}

extension ByteBuffer {
    /// Runs `body` over the readable bytes as a typed pointer; empty buffers are rejected by callers.
    func withInput<R>(_ body: (UnsafePointer<UInt8>, Int) throws -> R) throws -> R {
        try withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else {
                throw RecordBatchError.corrupt("empty compressed input")
            }
            return try body(base.assumingMemoryBound(to: UInt8.self), raw.count)
        }
    }
}

/// Wraps a codec body so internal untyped throws surface as `RecordBatchError`.
func codecCall<R>(_ codec: CompressionCodec, _ body: () throws -> R) throws(RecordBatchError) -> R {
    do {
        return try body()
    } catch let error as RecordBatchError {
        throw error
    } catch {
        throw .decompressionFailed(codec, "\(error)")
    }
}
