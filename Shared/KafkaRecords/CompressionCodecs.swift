import CLZ4
import CSnappy
import CZlib
import CZstd
import NIOCore

/// The four codecs Kafka batches use, each behind `Compression.compress` and `decompress`: gzip
/// (zlib), snappy (raw and xerial-framed), lz4 (frame format) and zstd, all bounded by `CappedOutput`.

// MARK: - gzip

extension Compression {
    static func gzipCompress(_ input: ByteBuffer) throws -> ByteBuffer {
        var stream = z_stream()
        // 15 + 16: maximum window with a gzip (not zlib) wrapper, which is what Kafka expects.
        let initStatus = deflateInit2_(
            &stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
            zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard initStatus == Z_OK else { throw RecordBatchError.decompressionFailed(.gzip, "deflateInit2 \(initStatus)") }
        defer { deflateEnd(&stream) }
        guard input.readableBytes < Int(UInt32.max) else { throw RecordBatchError.tooLarge(limit: Int(UInt32.max)) }
        let bound = Int(deflateBound(&stream, uLong(input.readableBytes)))
        var output = ByteBufferAllocator().buffer(capacity: bound)
        var status: Int32 = Z_OK
        input.withUnsafeReadableBytes { raw in
            stream.next_in = UnsafeMutablePointer(mutating: raw.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(raw.count)
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
                stream.next_out = out.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(out.count)
                status = deflate(&stream, Z_FINISH)
                return out.count - Int(stream.avail_out)
            }
        }
        guard status == Z_STREAM_END else { throw RecordBatchError.decompressionFailed(.gzip, "deflate \(status)") }
        return output
    }

    static func gzipDecompress(_ input: ByteBuffer, limit: Int) throws(RecordBatchError) -> ByteBuffer {
        try codecCall(.gzip) {
            var stream = z_stream()
            // 15 + 32: detect gzip or zlib headers automatically.
            let initStatus = inflateInit2_(&stream, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
            guard initStatus == Z_OK else { throw RecordBatchError.decompressionFailed(.gzip, "inflateInit2 \(initStatus)") }
            defer { inflateEnd(&stream) }
            guard input.readableBytes < Int(UInt32.max) else { throw RecordBatchError.tooLarge(limit: Int(UInt32.max)) }
            var output = CappedOutput(limit: limit, expected: expectedSize(declared: gzipTrailerSize(input), input))
            try input.withInput { base, count in
                stream.next_in = UnsafeMutablePointer(mutating: base)
                stream.avail_in = uInt(count)
                while true {
                    let status: Int32 = try output.produce { dst, room in
                        stream.next_out = dst
                        stream.avail_out = uInt(room)
                        let status = inflate(&stream, Z_NO_FLUSH)
                        return (room - Int(stream.avail_out), status)
                    }
                    switch status {
                    case Z_STREAM_END:
                        if stream.avail_in == 0 { return }
                        // Concatenated gzip members form one valid gzip stream.
                        guard inflateReset(&stream) == Z_OK else {
                            throw RecordBatchError.decompressionFailed(.gzip, "inflateReset failed")
                        }
                    case Z_OK:
                        continue
                    case Z_BUF_ERROR:
                        throw RecordBatchError.decompressionFailed(.gzip, "truncated stream")
                    default:
                        let message = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                        throw RecordBatchError.decompressionFailed(.gzip, message)
                    }
                }
            }
            return output.buffer
        }
    }
}

// MARK: - snappy

extension Compression {
    /// The xerial snappy-java stream header: magic, then version and compatible-version int32s.
    static let xerialMagic: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00]
    static let xerialHeaderSize = 16
    /// snappy-java's default block size, which the Java producer uses.
    static let xerialBlockSize = 32 * 1024

    static func snappyCompress(_ input: ByteBuffer) throws -> ByteBuffer {
        let count = input.readableBytes
        let blocks = max(1, (count + xerialBlockSize - 1) / xerialBlockSize)
        let capacity = xerialHeaderSize + blocks * (4 + snappy_max_compressed_length(xerialBlockSize))
        var output = ByteBufferAllocator().buffer(capacity: capacity)
        output.writeBytes(xerialMagic)
        output.writeInteger(Int32(1))
        output.writeInteger(Int32(1))
        var failed = false
        input.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count, let base = raw.baseAddress {
                let chunk = min(xerialBlockSize, raw.count - offset)
                let lengthAt = output.writerIndex
                output.writeInteger(Int32(0))
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: snappy_max_compressed_length(chunk)) { out in
                    var written = out.count
                    let status = snappy_compress(
                        (base + offset).assumingMemoryBound(to: CChar.self), chunk,
                        out.baseAddress?.assumingMemoryBound(to: CChar.self), &written)
                    if status != SNAPPY_OK { failed = true; return 0 }
                    return written
                }
                output.setInteger(Int32(output.writerIndex - lengthAt - 4), at: lengthAt)
                offset += chunk
            }
        }
        if failed { throw RecordBatchError.decompressionFailed(.snappy, "snappy_compress failed") }
        return output
    }

    /// Snappy as a raw block (what librdkafka writes) or xerial-framed (Java, kafka-python, sarama).
    static func snappyDecompress(_ input: ByteBuffer, limit: Int) throws(RecordBatchError) -> ByteBuffer {
        var output = ByteBufferAllocator().buffer(capacity: 0)
        if isXerial(input) {
            do {
                try appendXerial(input, to: &output, limit: limit)
                return output
            } catch let xerialError {
                if case .tooLarge = xerialError { throw xerialError }
                // A raw block may begin with the same bytes; fall back before failing.
                output.clear()
                do {
                    try appendRawSnappy(input, to: &output, limit: limit)
                    return output
                } catch {
                    throw xerialError
                }
            }
        }
        try appendRawSnappy(input, to: &output, limit: limit)
        return output
    }

    static func isXerial(_ input: ByteBuffer) -> Bool {
        guard input.readableBytes >= xerialHeaderSize,
            let head = input.getBytes(at: input.readerIndex, length: xerialMagic.count)
        else { return false }
        return head == xerialMagic
    }

    static func appendXerial(_ input: ByteBuffer, to output: inout ByteBuffer, limit: Int) throws(RecordBatchError) {
        var input = input
        input.moveReaderIndex(forwardBy: xerialHeaderSize)
        while input.readableBytes > 0 {
            // snappy-java readers accept a new stream header between blocks (concatenated streams).
            if isXerial(input) {
                input.moveReaderIndex(forwardBy: xerialHeaderSize)
                continue
            }
            guard let length = input.readInteger(as: Int32.self) else {
                throw .decompressionFailed(.snappy, "truncated xerial block length")
            }
            guard length >= 0, let block = input.readSlice(length: Int(length)) else {
                throw .decompressionFailed(.snappy, "xerial block length \(length) exceeds input")
            }
            if length > 0 { try appendRawSnappy(block, to: &output, limit: limit) }
        }
    }

    static func appendRawSnappy(_ block: ByteBuffer, to output: inout ByteBuffer, limit: Int) throws(RecordBatchError) {
        var size = 0
        let lengthStatus = block.withUnsafeReadableBytes { raw -> snappy_status in
            guard let base = raw.baseAddress, raw.count > 0 else { return SNAPPY_INVALID_INPUT }
            return snappy_uncompressed_length(base.assumingMemoryBound(to: CChar.self), raw.count, &size)
        }
        guard lengthStatus == SNAPPY_OK else { throw .decompressionFailed(.snappy, "invalid snappy block header") }
        // The declared size is checked before anything is allocated for it.
        guard size <= limit - output.writerIndex else { throw .tooLarge(limit: limit) }
        guard size > 0 else { return }
        var status = SNAPPY_OK
        output.reserveCapacity(minimumWritableBytes: size)
        _ = block.withUnsafeReadableBytes { raw in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
                var written = out.count
                status = snappy_uncompress(
                    raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count,
                    out.baseAddress?.assumingMemoryBound(to: CChar.self), &written)
                return status == SNAPPY_OK ? written : 0
            }
        }
        guard status == SNAPPY_OK else { throw .decompressionFailed(.snappy, "corrupt snappy block") }
    }
}

// MARK: - lz4

extension Compression {
    static func lz4Compress(_ input: ByteBuffer) throws -> ByteBuffer {
        var preferences = LZ4F_preferences_t()
        // The Java client reads only independent blocks; 64 KiB is what it writes.
        preferences.frameInfo.blockSizeID = LZ4F_max64KB
        preferences.frameInfo.blockMode = LZ4F_blockIndependent
        let count = input.readableBytes
        let bound = LZ4F_compressFrameBound(count, &preferences)
        var output = ByteBufferAllocator().buffer(capacity: bound)
        var result = 0
        _ = input.withUnsafeReadableBytes { raw in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
                result = LZ4F_compressFrame(out.baseAddress, out.count, raw.baseAddress, raw.count, &preferences)
                return LZ4F_isError(result) != 0 ? 0 : result
            }
        }
        if LZ4F_isError(result) != 0 {
            throw RecordBatchError.decompressionFailed(.lz4, String(cString: LZ4F_getErrorName(result)))
        }
        return output
    }

    static func lz4Decompress(_ input: ByteBuffer, limit: Int) throws(RecordBatchError) -> ByteBuffer {
        try codecCall(.lz4) {
            var context: OpaquePointer?
            let created = LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))
            guard LZ4F_isError(created) == 0, let context else {
                throw RecordBatchError.decompressionFailed(.lz4, "cannot create context")
            }
            defer { LZ4F_freeDecompressionContext(context) }
            var output = CappedOutput(limit: limit, expected: input.readableBytes * 4)
            try input.withInput { base, count in
                var consumed = 0
                while true {
                    let (produced, used, hint) = try output.produce { dst, room -> (Int, (Int, Int, Int)) in
                        var dstSize = room
                        var srcSize = count - consumed
                        let hint = LZ4F_decompress(context, dst, &dstSize, base + consumed, &srcSize, nil)
                        return (LZ4F_isError(hint) != 0 ? 0 : dstSize, (dstSize, srcSize, hint))
                    }
                    if LZ4F_isError(hint) != 0 {
                        throw RecordBatchError.decompressionFailed(.lz4, String(cString: LZ4F_getErrorName(hint)))
                    }
                    consumed += used
                    if hint == 0 && consumed == count { return }
                    if produced == 0 && used == 0 {
                        throw RecordBatchError.decompressionFailed(.lz4, "truncated frame")
                    }
                }
            }
            return output.buffer
        }
    }
}

// MARK: - zstd

extension Compression {
    /// zstd level 3, the library default and what Kafka clients use.
    static let zstdLevel: Int32 = 3

    static func zstdCompress(_ input: ByteBuffer) throws -> ByteBuffer {
        let bound = ZSTD_compressBound(input.readableBytes)
        var output = ByteBufferAllocator().buffer(capacity: bound)
        var result = 0
        _ = input.withUnsafeReadableBytes { raw in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
                result = ZSTD_compress(out.baseAddress, out.count, raw.baseAddress, raw.count, zstdLevel)
                return ZSTD_isError(result) != 0 ? 0 : result
            }
        }
        if ZSTD_isError(result) != 0 {
            throw RecordBatchError.decompressionFailed(.zstd, String(cString: ZSTD_getErrorName(result)))
        }
        return output
    }

    /// The largest window accepted: enough for every mainstream client (they use ≤ 8 MiB windows),
    /// larger only when the output limit itself is larger, so a hostile frame header cannot make
    /// the decoder reserve far more memory than the caller allowed.
    static func zstdWindowLog(limit: Int) -> Int32 {
        var log: Int32 = 23
        while log < 27 && (1 << log) < limit { log += 1 }
        return log
    }

    static func zstdDecompress(_ input: ByteBuffer, limit: Int) throws(RecordBatchError) -> ByteBuffer {
        try codecCall(.zstd) {
            guard let context = ZSTD_createDCtx() else {
                throw RecordBatchError.decompressionFailed(.zstd, "cannot create context")
            }
            defer { ZSTD_freeDCtx(context) }
            _ = ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, zstdWindowLog(limit: limit))
            let declared = input.withUnsafeReadableBytes { raw -> UInt64 in
                ZSTD_getFrameContentSize(raw.baseAddress, raw.count)
            }
            // The two largest values mean "unknown" and "error".
            let known = declared < UInt64.max - 1 && declared <= UInt64(Int.max) ? Int(declared) : nil
            var output = CappedOutput(limit: limit, expected: expectedSize(declared: known, input))
            try input.withInput { base, count in
                var source = ZSTD_inBuffer(src: base, size: count, pos: 0)
                while true {
                    let before = source.pos
                    let (produced, status) = try output.produce { dst, room -> (Int, (Int, Int)) in
                        var sink = ZSTD_outBuffer(dst: dst, size: room, pos: 0)
                        let status = ZSTD_decompressStream(context, &sink, &source)
                        return (ZSTD_isError(status) != 0 ? 0 : sink.pos, (sink.pos, status))
                    }
                    if ZSTD_isError(status) != 0 {
                        throw RecordBatchError.decompressionFailed(.zstd, String(cString: ZSTD_getErrorName(status)))
                    }
                    // 0 means a frame ended and is fully flushed; more input means another frame.
                    if status == 0 && source.pos == source.size { return }
                    if produced == 0 && source.pos == before {
                        throw RecordBatchError.decompressionFailed(.zstd, "truncated frame")
                    }
                }
            }
            return output.buffer
        }
    }
}
