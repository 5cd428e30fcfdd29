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

/// A durable, untrimmed append found by recovery or written since.
public struct StoredBatch: Sendable, Equatable {
    public var lsn: LSN
    public var epoch: Int32
    public var baseOffset: Int64
    public var lastOffset: Int64
    public var batches: ByteBuffer
}

/// What recovery rebuilt from a volume.
public struct RecoveredState: Sendable {
    /// Durable stream states (epoch, end offset).
    public var streams: [UInt64: WALBatcher.StreamState] = [:]
    /// Durable, untrimmed appends per stream in offset order.
    public var batches: [UInt64: [StoredBatch]] = [:]
    /// Sizes of untrimmed records in LSN order (for buffer accounting).
    public var records: [(lsn: LSN, size: Int)] = []
    /// LSN of the next record.
    public var nextLSN: LSN = 0
    /// First LSN still needed.
    public var trimLSN: LSN = 0
    /// Where the log was cut (segment, byte position) when recovery met a bad record.
    public var truncatedAt: (segment: UInt64, position: Int)?

    /// An empty state (nothing recovered yet).
    public init() {}

    /// Applies one valid record (records below the trim point only move state forward).
    mutating func apply(_ record: WALFormat.Record, lsn: LSN, size: Int) {
        switch record {
        case .append(let stream, let epoch, let base, let last, let bytes):
            var state = streams[stream] ?? WALBatcher.StreamState(epoch: epoch, end: nil)
            state.epoch = max(state.epoch, epoch)
            state.durableEpoch = state.epoch
            state.acceptedEnd = max(state.acceptedEnd ?? (last + 1), last + 1)
            state.durableEnd = state.acceptedEnd
            streams[stream] = state
            if lsn >= trimLSN {
                batches[stream, default: []].append(StoredBatch(lsn: lsn, epoch: epoch, baseOffset: base, lastOffset: last, batches: bytes))
            }
        case .fence(let stream, let epoch):
            var state = streams[stream] ?? WALBatcher.StreamState(epoch: epoch, end: nil)
            state.epoch = max(state.epoch, epoch)
            state.durableEpoch = state.epoch
            streams[stream] = state
        }
        if lsn >= trimLSN { records.append((lsn, size)) }
    }
}

/// Scans consecutive segment images, stopping at the first record that is not intact.
public enum WALScanner {
    /// Result of scanning one segment image.
    public struct SegmentResult: Sendable {
        /// Position after the last valid record.
        public var end: Int
        /// LSN expected next.
        public var nextLSN: LSN
    }

    /// Replays the records of one segment image from its header, applying those at or after `startLSN`'s predecessor chain.
    /// Returns nil if the header is invalid or does not match `sequence`/`expectedFirstLSN`.
    public static func scan(
        segment bytes: UnsafeRawBufferPointer, sequence: UInt64, expectedFirstLSN: LSN?,
        into state: inout RecoveredState
    ) -> SegmentResult? {
        guard let header = WALFormat.readSegmentHeader(bytes), header.sequence == sequence else { return nil }
        if let expected = expectedFirstLSN, header.firstLSN != expected { return nil }
        var position = WALFormat.segmentHeaderSize
        var lsn = header.firstLSN
        while case .record(let record, let size) = WALFormat.decodeRecord(bytes, at: position, expectedLSN: lsn, segment: sequence) {
            state.apply(record, lsn: lsn, size: size)
            position += size
            lsn += 1
        }
        return SegmentResult(end: position, nextLSN: lsn)
    }
}

/// Files of one WAL volume: segments `NNNNNNNNNNNNNNNNNNNN.wal` and a `checkpoint`.
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
    private(set) var segments: [Segment] = []
    private var fd: Int32 = -1
    private var writePosition = 0
    private var trimLSN: LSN = 0
    /// Zero-filling a segment takes long enough to stall appends, so the next one is prepared
    /// on its own thread. fdatasync into written-zero blocks is cheaper than into fallocated
    /// (unwritten) extents, whose conversion costs a journal commit on every sync.
    private let spareThread: NIOThreadPool
    private let spare = NIOLockedValueBox(Spare.none)
    private let stopped = NIOLockedValueBox(false)
    /// Whether new segments are zero-filled in the background (otherwise only fallocated).
    let zeroFill: Bool
    /// Trimmed segments waiting to be reused, oldest first (only touched on the I/O thread).
    private var recycled: [String] = []
    /// Enough for the segments trimmed between two rolls at full speed.
    static let maxRecycled = 4
    /// O_DIRECT when appends are to be written with it (where the file system allows), else nil.
    private let directFlag: Int32?
    /// The current segment opened with O_DIRECT (-1: appends go through the page cache).
    private var directFD: Int32 = -1
    /// Block-aligned staging for direct writes; starts with the bytes of the partly written block at
    /// the write position, which every direct write rewrites (with the same bytes) ahead of the new ones.
    private let staging = AlignedBytes(alignment: WALVolume.directBlock)
    /// Alignment of offsets, lengths and memory for direct writes; 4 KiB suits every common device.
    static let directBlock = 4096

    private let logger: Logger
    /// Whether the fall-back to buffered appends has been logged.
    private var refusalLogged = false

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

    private var sparePath: String { directory + "/spare.tmp" }

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

    private static func zeroFilledFile(path: String, size: Int) -> Bool {
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

    private func path(_ sequence: UInt64) -> String {
        let digits = String(sequence)
        return directory + "/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".wal"
    }

    private var checkpointPath: String { directory + "/checkpoint" }

    // MARK: Recovery

    /// Reads the volume, cuts it at the first bad record and prepares to append after it.
    func recover() throws(WALError) -> RecoveredState {
        if mkdir(directory, 0o755) != 0, errno != EEXIST { throw .volume(operation: "mkdir \(directory)", errno: errno) }
        var state = RecoveredState()
        var checkpointStreams: [UInt64: WALBatcher.StreamState] = [:]
        if let checkpoint = try readCheckpoint() {
            state.trimLSN = checkpoint.trimLSN
            checkpointStreams = checkpoint.streams
        }
        trimLSN = state.trimLSN
        state.streams = checkpointStreams
        state.nextLSN = state.trimLSN
        let sequences = try listSegments()
        // The scan starts in the last segment that begins at or before the trim point.
        var headers: [(UInt64, LSN?)] = []
        for sequence in sequences { headers.append((sequence, try readHeader(sequence)?.firstLSN)) }
        var startIndex = 0
        for (index, header) in headers.enumerated() {
            if let first = header.1, first <= state.trimLSN { startIndex = index }
        }
        // Segments wholly before the start are below the trim point.
        for (sequence, _) in headers.prefix(startIndex) { unlink(path(sequence)) }
        var kept: [Segment] = []
        var expected: LSN? = nil
        var cut: (UInt64, Int)? = nil
        var index = startIndex
        while index < headers.count {
            let sequence = headers[index].0
            // Segments appear only by rename after their header is synced: a bad header is damage,
            // and deleting what follows it would be silent data loss. An operator has to look.
            guard headers[index].1 != nil else { throw .corruptVolume("segment \(sequence) has an invalid header") }
            let image = try readFile(path(sequence))
            let result = image.withUnsafeBytes { bytes in
                WALScanner.scan(segment: bytes, sequence: sequence, expectedFirstLSN: expected, into: &state)
            }
            guard let result else { break }
            if kept.isEmpty, let first = headers[index].1, first > state.trimLSN {
                throw .corruptVolume("first segment \(sequence) starts at LSN \(first) after trim point \(state.trimLSN)")
            }
            kept.append(Segment(sequence: sequence, firstLSN: headers[index].1 ?? 0))
            cut = (sequence, result.end)
            expected = result.nextLSN
            state.nextLSN = result.nextLSN
            index += 1
        }
        // Nothing after the first bad record is ever replayed: later segments go.
        for (sequence, _) in headers[index...] { unlink(path(sequence)) }
        segments = kept
        if let (sequence, position) = cut {
            try openForAppend(sequence: sequence, position: position)
            state.truncatedAt = (sequence, position)
        }
        if state.nextLSN < state.trimLSN {
            // The log ended below the trim point (damage in trimmed data): continue in a fresh
            // segment starting at the trim point, so LSNs stay consecutive within each segment.
            state.nextLSN = state.trimLSN
            closeSegment()
        }
        if cut == nil, zeroFill {
            // An empty volume: the first segment is needed at once, so prepare it now (startup
            // may wait; the first appends should not land in a slower fallocated segment).
            spare.withLockedValue { $0 = Self.zeroFilledFile(path: sparePath, size: segmentSize) ? .ready : .none }
        }
        try syncDirectory()
        prepareSpare()
        return state
    }

    private func listSegments() throws(WALError) -> [UInt64] {
        guard let dir = opendir(directory) else { throw .volume(operation: "opendir", errno: errno) }
        defer { closedir(dir) }
        var result: [UInt64] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name.hasSuffix(".wal"), name.count == 24, let sequence = UInt64(name.prefix(20)) {
                result.append(sequence)
            } else if name.hasSuffix(".tmp") {
                unlink(directory + "/" + name)
            }
        }
        return result.sorted()
    }

    private func readHeader(_ sequence: UInt64) throws(WALError) -> (sequence: UInt64, firstLSN: LSN)? {
        let fd = open(path(sequence), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .volume(operation: "open segment", errno: errno) }
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: WALFormat.segmentHeaderSize)
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == WALFormat.segmentHeaderSize else { return nil }
        guard let parsed = header.withUnsafeBytes({ WALFormat.readSegmentHeader($0) }), parsed.sequence == sequence else { return nil }
        return parsed
    }

    private func readFile(_ path: String) throws(WALError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .volume(operation: "open \(path)", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .volume(operation: "fstat", errno: errno) }
        // Files on the volume are written by this engine (segments of an earlier, possibly larger
        // configuration included); the cap only guards against absurd sizes.
        guard st.st_size <= 1 << 32 else { throw .corruptVolume("\(path) is \(st.st_size) bytes") }
        let size = Int(st.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .volume(operation: "pread", errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return Array(bytes.prefix(done))
    }

    private func openForAppend(sequence: UInt64, position: Int) throws(WALError) {
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

    private func logRefusal(_ what: String, errno code: Int32) {
        guard !refusalLogged else { return }
        refusalLogged = true
        let reason = code == 0 ? "short write" : String(cString: strerror(code))
        logger.warning("WAL volume \(directory): \(what) failed (\(reason)); appends go through the page cache")
    }

    private func closeSegment() {
        if fd >= 0 { close(fd) }
        if directFD >= 0 { close(directFD) }
        fd = -1
        directFD = -1
    }

    /// Opens the current segment for direct writes too, if asked for and the file system allows it,
    /// and stages the partly written block at the write position (read back through the page cache).
    private func openDirect(_ path: String) throws(WALError) {
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

    private func zero(from start: Int, to end: Int) throws(WALError) {
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

    private func preallocate() throws(WALError) {
        #if canImport(Glibc)
        let rc = posix_fallocate(fd, 0, off_t(segmentSize))
        if rc != 0, rc != EOPNOTSUPP { throw .volume(operation: "posix_fallocate", errno: rc) }
        #else
        if ftruncate(fd, off_t(segmentSize)) != 0 { throw .volume(operation: "ftruncate", errno: errno) }
        #endif
    }

    private func syncDirectory() throws(WALError) {
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

    private func flush(_ buffer: inout ByteBuffer) throws(WALError) {
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
    private func writeDirect(_ buffer: ByteBuffer) throws(WALError) {
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

    private func writeAll(_ buffer: ByteBuffer, at offset: Int) throws(WALError) {
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
    private func roll(firstLSN: LSN) throws(WALError) {
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
    private func recycleOrDelete(_ sequence: UInt64) {
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

    private func readCheckpoint() throws(WALError) -> (trimLSN: LSN, streams: [UInt64: WALBatcher.StreamState])? {
        let fd = open(checkpointPath, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .volume(operation: "open checkpoint", errno: errno)
        }
        close(fd)
        var buffer = ByteBuffer(bytes: try readFile(checkpointPath))
        // The checkpoint is replaced by rename, so a bad one means damage, not a torn write.
        guard buffer.readableBytes >= 20,
              let crc = buffer.getInteger(at: buffer.writerIndex - 4, endianness: .big, as: UInt32.self),
              CRC32C.checksum(buffer.getSlice(at: 0, length: buffer.readableBytes - 4)!) == crc,
              buffer.readInteger(endianness: .big, as: UInt32.self) == 0x464C_434B,
              let lsn = buffer.readInteger(endianness: .big, as: UInt64.self),
              let count = buffer.readInteger(endianness: .big, as: UInt32.self),
              Int(count) * 20 == buffer.readableBytes - 4
        else { throw .corruptVolume("checkpoint unreadable") }
        var streams: [UInt64: WALBatcher.StreamState] = [:]
        for _ in 0..<count {
            guard let stream = buffer.readInteger(endianness: .big, as: UInt64.self),
                  let epoch = buffer.readInteger(endianness: .big, as: Int32.self),
                  let end = buffer.readInteger(endianness: .big, as: Int64.self)
            else { throw .corruptVolume("checkpoint truncated") }
            streams[stream] = WALBatcher.StreamState(epoch: epoch, end: end < 0 ? nil : end)
        }
        return (lsn, streams)
    }

    /// Current segment count (for tests and metrics).
    var segmentCount: Int { segments.count }
}

/// Heap bytes aligned for O_DIRECT, grown on demand (used only from the volume's I/O calls).
final class AlignedBytes {
    let alignment: Int
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int

    init(alignment: Int) {
        self.alignment = alignment
        capacity = alignment
        base = UnsafeMutableRawPointer.allocate(byteCount: alignment, alignment: alignment)
    }

    deinit { base.deallocate() }

    /// Makes room for `count` bytes, keeping the first `keeping`.
    func reserve(_ count: Int, keeping: Int) {
        guard count > capacity else { return }
        var grown = capacity
        while grown < count { grown *= 2 }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: alignment)
        fresh.copyMemory(from: base, byteCount: keeping)
        base.deallocate()
        base = fresh
        capacity = grown
    }
}
