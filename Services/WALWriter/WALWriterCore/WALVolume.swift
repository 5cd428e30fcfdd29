#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KafkaRecords
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

///
/// Used only from the engine's I/O thread; every call blocks.
final class WALVolume: @unchecked Sendable {
    struct Segment {
        var sequence: UInt64
        var firstLSN: LSN
    }

    /// State of the zero-filled file kept ready for the next segment.
    enum Spare: Sendable {
        case none, preparing, ready
    }

    let directory: String
    let segmentSize: Int
    var segments: [Segment] = []
    var fd: Int32 = -1
    var writePosition = 0
    var trimLSN: LSN = 0
    /// Zero-filling a segment takes long enough to stall appends, so the next one is prepared
    /// on its own thread. fdatasync into written-zero blocks is cheaper than into fallocated
    /// (unwritten) extents, whose conversion costs a journal commit on every sync.
    let spareThread: NIOThreadPool
    let spare = NIOLockedValueBox(Spare.none)
    let stopped = NIOLockedValueBox(false)
    /// Whether new segments are zero-filled in the background (otherwise only fallocated).
    let zeroFill: Bool
    /// Trimmed segments waiting to be reused, oldest first (only touched on the I/O thread).
    var recycled: [String] = []
    /// Enough for the segments trimmed between two rolls at full speed.
    static let maxRecycled = 4
    /// O_DIRECT when appends are to be written with it (where the file system allows), else nil.
    let directFlag: Int32?
    /// The current segment opened with O_DIRECT (-1: appends go through the page cache).
    var directFD: Int32 = -1
    /// Block-aligned staging for direct writes; starts with the bytes of the partly written block at
    /// the write position, which every direct write rewrites (with the same bytes) ahead of the new ones.
    let staging = AlignedBytes(alignment: WALVolume.directBlock)
    /// Alignment of offsets, lengths and memory for direct writes; 4 KiB suits every common device.
    static let directBlock = 4096

    let logger: Logger
    /// Whether the fall-back to buffered appends has been logged.
    var refusalLogged = false

    init(directory: String, segmentSize: Int, zeroFill: Bool = true, directWrites: Bool = true, logger: Logger = Logger(label: "floe.wal")) {
        self.logger = logger
        self.directory = directory
        self.segmentSize = segmentSize
        self.zeroFill = zeroFill
        directFlag = directWrites ? WALVolume.oDirect : nil
        spareThread = NIOThreadPool(numberOfThreads: 1)
        spareThread.start()
    }

    deinit {
        if fd >= 0 { close(fd) }
        if directFD >= 0 { close(directFD) }
        shutdown()
    }

    /// O_DIRECT, which Swift's Glibc module does not export.
    static var oDirect: Int32? {
        #if os(Linux) && (arch(x86_64) || arch(i386))
        return 0o40000
        #elseif os(Linux) && (arch(arm64) || arch(arm))
        return 0o200000
        #else
        return nil
        #endif
    }

    /// Stops the spare-preparation thread.
    func shutdown() {
        let first = stopped.withLockedValue { stopped in
            defer { stopped = true }
            return !stopped
        }
        if first { spareThread.shutdownGracefully { _ in } }
    }

    var sparePath: String { directory + "/spare.tmp" }

    /// Starts zero-filling the spare segment in the background unless one is ready or under way.
    func prepareSpare() {
        guard zeroFill else { return }
        let start = spare.withLockedValue { state -> Bool in
            guard case .none = state else { return false }
            state = .preparing
            return true
        }
        guard start else { return }
        let path = sparePath
        let size = segmentSize
        let spare = self.spare
        spareThread.submit { work in
            guard case .active = work else { return }
            let ok = Self.zeroFilledFile(path: path, size: size)
            spare.withLockedValue { $0 = ok ? .ready : .none }
        }
    }

    static func zeroFilledFile(path: String, size: Int) -> Bool {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        var position = 0
        while position < size {
            let n = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, min($0.count, size - position), off_t(position)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return false }
            position += n
        }
        return fsync(fd) == 0
    }

    func path(_ sequence: UInt64) -> String {
        let digits = String(sequence)
        return directory + "/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".wal"
    }

    var checkpointPath: String { directory + "/checkpoint" }

    func openForAppend(sequence: UInt64, position: Int) throws(WALError) {
        let fd = open(path(sequence), O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .volume(operation: "open segment", errno: errno) }
        closeSegment()
        self.fd = fd
        writePosition = position
        // Erase everything after the cut so a later append can never line up with stale records.
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .volume(operation: "fstat", errno: errno) }
        try zero(from: position, to: max(segmentSize, Int(st.st_size)))
        try preallocate()
        guard fdatasync(fd) == 0 else { throw .volume(operation: "fdatasync", errno: errno) }
        try openDirect(path(sequence))
    }

    func logRefusal(_ what: String, errno code: Int32) {
        guard !refusalLogged else { return }
        refusalLogged = true
        let reason = code == 0 ? "short write" : String(cString: strerror(code))
        logger.warning("WAL volume \(directory): \(what) failed (\(reason)); appends go through the page cache")
    }

    func closeSegment() {
        if fd >= 0 { close(fd) }
        if directFD >= 0 { close(directFD) }
        fd = -1
        directFD = -1
    }

    /// Opens the current segment for direct writes too, if asked for and the file system allows it,
    /// and stages the partly written block at the write position (read back through the page cache).
    func openDirect(_ path: String) throws(WALError) {
        guard let flag = directFlag else { return }
        let dfd = open(path, O_WRONLY | flag | O_CLOEXEC)
        // EINVAL: this file system does not do direct I/O; appends stay buffered.
        guard dfd >= 0 else {
            logRefusal("open with O_DIRECT", errno: errno)
            return
        }
        directFD = dfd
        let start = writePosition & ~(Self.directBlock - 1)
        let carried = writePosition - start
        var done = 0
        while done < carried {
            let n = pread(fd, staging.base + done, carried - done, off_t(start + done))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw .volume(operation: "pread", errno: n < 0 ? errno : EIO) }
            done += n
        }
    }

    func zero(from start: Int, to end: Int) throws(WALError) {
        guard end > start else { return }
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        var position = start
        while position < end {
            let count = min(chunk.count, end - position)
            let n = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, count, off_t(position)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .volume(operation: "pwrite zeros", errno: errno)
            }
            position += n
        }
    }

    func preallocate() throws(WALError) {
        #if canImport(Glibc)
        let rc = posix_fallocate(fd, 0, off_t(segmentSize))
        if rc != 0, rc != EOPNOTSUPP { throw .volume(operation: "posix_fallocate", errno: rc) }
        #else
        if ftruncate(fd, off_t(segmentSize)) != 0 { throw .volume(operation: "ftruncate", errno: errno) }
        #endif
    }

    func syncDirectory() throws(WALError) {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw .volume(operation: "open directory", errno: errno) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw .volume(operation: "fsync directory", errno: errno) }
    }

    // MARK: Appending

    /// Writes records in LSN order and makes them durable; returns after fdatasync.
    func append(_ records: [(record: WALFormat.Record, lsn: LSN)]) throws(WALError) {
        var buffer = ByteBuffer()
        var segment = segments.last?.sequence ?? 0
        for (record, lsn) in records {
            let size: Int
            switch record {
            case .append(_, _, _, _, let bytes): size = WALFormat.encodedSize(batchBytes: bytes.readableBytes)
            case .fence: size = WALFormat.encodedSize(batchBytes: nil)
            }
            if fd < 0 || writePosition + buffer.readableBytes + size > segmentSize {
                try flush(&buffer)
                try roll(firstLSN: lsn)
                segment = segments.last?.sequence ?? 0
            }
            WALFormat.writeRecord(record, lsn: lsn, segment: segment, into: &buffer)
        }
        try flush(&buffer)
        guard fdatasync(fd) == 0 else { throw .volume(operation: "fdatasync", errno: errno) }
    }

    func flush(_ buffer: inout ByteBuffer) throws(WALError) {
        guard buffer.readableBytes > 0 else { return }
        if directFD >= 0 {
            try writeDirect(buffer)
        } else {
            try writeAll(buffer, at: writePosition)
        }
        writePosition += buffer.readableBytes
        buffer.clear()
    }

    /// Writes `buffer` at the write position in whole blocks with O_DIRECT: the partly written block
    /// there (same bytes again, so a torn write cannot damage what was durable), the new records,
    /// zeros to the end of the last block. After an idle period this syncs faster than page-cache
    /// writeback (35–80 µs of a 300–450 µs sync on the development machine), and never fills the cache.
    /// A file system that refuses an aligned direct write gets this and later writes buffered.
    func writeDirect(_ buffer: ByteBuffer) throws(WALError) {
        let block = Self.directBlock
        let start = writePosition & ~(block - 1)
        let carried = writePosition - start
        let end = carried + buffer.readableBytes
        let padded = (end + block - 1) & ~(block - 1)
        staging.reserve(padded, keeping: carried)
        buffer.withUnsafeReadableBytes { staging.base.advanced(by: carried).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        (staging.base + end).initializeMemory(as: UInt8.self, repeating: 0, count: padded - end)
        var done = 0
        while done < padded {
            let n = pwrite(directFD, staging.base + done, padded - done, off_t(start + done))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL { break }
                throw .volume(operation: "pwrite", errno: errno)
            }
            done += n
            // A short write leaves the rest unaligned: finish it buffered.
            if done < padded, done % block != 0 { break }
        }
        if done < padded {
            logRefusal("a direct write", errno: done % block != 0 ? 0 : EINVAL)
            close(directFD)
            directFD = -1
            try writeAll(buffer, at: writePosition)
            return
        }
        // Keep the block the next write starts in.
        let kept = end & ~(block - 1)
        if kept > 0 { staging.base.copyMemory(from: staging.base + kept, byteCount: end - kept) }
    }

    func writeAll(_ buffer: ByteBuffer, at offset: Int) throws(WALError) {
        var done = 0
        let total = buffer.readableBytes
        while done < total {
            let n = buffer.withUnsafeReadableBytes { pwrite(fd, $0.baseAddress! + done, total - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .volume(operation: "pwrite", errno: errno)
            }
            done += n
        }
    }

    /// Closes the current segment durably and starts a new preallocated one.
    func roll(firstLSN: LSN) throws(WALError) {
        if fd >= 0 {
            guard fdatasync(fd) == 0 else { throw .volume(operation: "fdatasync", errno: errno) }
            closeSegment()
        }
        let sequence = (segments.last?.sequence ?? 0) + 1
        let final = path(sequence)
        var temporary = final + ".tmp"
        let reuse = recycled.isEmpty ? nil : recycled.removeFirst()
        let useSpare = reuse == nil && spare.withLockedValue { state -> Bool in
            guard case .ready = state else { return false }
            state = .none
            return true
        }
        if let reuse {
            temporary = reuse
            let newFD = open(temporary, O_RDWR | O_CLOEXEC)
            guard newFD >= 0 else { throw .volume(operation: "open recycled segment", errno: errno) }
            fd = newFD
        } else if useSpare {
            temporary = sparePath
            let newFD = open(temporary, O_RDWR | O_CLOEXEC)
            guard newFD >= 0 else { throw .volume(operation: "open spare segment", errno: errno) }
            fd = newFD
        } else {
            let newFD = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard newFD >= 0 else { throw .volume(operation: "create segment", errno: errno) }
            fd = newFD
            try preallocate()
        }
        var header = ByteBuffer()
        WALFormat.writeSegmentHeader(into: &header, sequence: sequence, firstLSN: firstLSN)
        try writeAll(header, at: 0)
        guard fsync(fd) == 0 else { throw .volume(operation: "fsync segment", errno: errno) }
        guard rename(temporary, final) == 0 else { throw .volume(operation: "rename segment", errno: errno) }
        try syncDirectory()
        segments.append(Segment(sequence: sequence, firstLSN: firstLSN))
        writePosition = WALFormat.segmentHeaderSize
        try openDirect(final)
        if recycled.isEmpty { prepareSpare() }
    }

    // MARK: Trim

    /// Persists the trim point and stream states atomically, then deletes segments wholly below it.
    func trim(upTo lsn: LSN, streams: [(UInt64, Int32, Int64?)]) throws(WALError) {
        // Trim points only move forward, or recovery could start in an already deleted segment.
        guard lsn > trimLSN else { return }
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(0x464C_434B), endianness: .big)  // "FLCK"
        buffer.writeInteger(lsn, endianness: .big)
        buffer.writeInteger(UInt32(streams.count), endianness: .big)
        for (stream, epoch, end) in streams {
            buffer.writeInteger(stream, endianness: .big)
            buffer.writeInteger(epoch, endianness: .big)
            buffer.writeInteger(end ?? -1, endianness: .big)
        }
        buffer.writeInteger(CRC32C.checksum(buffer), endianness: .big)
        let temporary = checkpointPath + ".tmp"
        let cfd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard cfd >= 0 else { throw .volume(operation: "create checkpoint", errno: errno) }
        let saved = fd
        fd = cfd
        defer { fd = saved; close(cfd) }
        try writeAll(buffer, at: 0)
        guard fsync(cfd) == 0 else { throw .volume(operation: "fsync checkpoint", errno: errno) }
        guard rename(temporary, checkpointPath) == 0 else { throw .volume(operation: "rename checkpoint", errno: errno) }
        try syncDirectory()
        trimLSN = lsn
        // Keep the last segment starting at or before the trim point; everything before it is gone.
        while segments.count >= 2, segments[1].firstLSN <= lsn {
            recycleOrDelete(segments[0].sequence)
            segments.removeFirst()
        }
    }

    /// Trimmed segments kept for reuse: their blocks are written and allocated, so appends sync into
    /// them as cheaply as into a zero-filled segment, without writing a segment of zeros per segment
    /// of data. Stale records in them cannot be mistaken for new ones: record CRCs are seeded with the
    /// segment sequence, and recovery also requires consecutive LSNs.
    func recycleOrDelete(_ sequence: UInt64) {
        let segmentPath = path(sequence)
        guard zeroFill, recycled.count < Self.maxRecycled else {
            unlink(segmentPath)
            return
        }
        // Sequences are never reused, so the name is unique.
        let target = directory + "/recycled-\(sequence).tmp"
        if rename(segmentPath, target) == 0 {
            recycled.append(target)
        } else {
            unlink(segmentPath)
        }
    }
}
