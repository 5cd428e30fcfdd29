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

/// Recovery: rebuilding the durable state from the segments and the checkpoint at start-up.
extension WALVolume {
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

    func listSegments() throws(WALError) -> [UInt64] {
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

    func readHeader(_ sequence: UInt64) throws(WALError) -> (sequence: UInt64, firstLSN: LSN)? {
        let fd = open(path(sequence), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .volume(operation: "open segment", errno: errno) }
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: WALFormat.segmentHeaderSize)
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == WALFormat.segmentHeaderSize else { return nil }
        guard let parsed = header.withUnsafeBytes({ WALFormat.readSegmentHeader($0) }), parsed.sequence == sequence else { return nil }
        return parsed
    }

    func readFile(_ path: String) throws(WALError) -> [UInt8] {
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

    func readCheckpoint() throws(WALError) -> (trimLSN: LSN, streams: [UInt64: WALBatcher.StreamState])? {
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
