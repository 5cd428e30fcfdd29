import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The local-directory object store (`file:///abs/path`): one file per object in a flat directory.
///
/// Keys are percent-encoded into file names (so keys with `/` need no subdirectories and a key can
/// never collide with a directory). Objects are published atomically: written to a dot-named
/// temporary file in the same directory, fsynced, then renamed (put) or hard-linked (putIfAbsent,
/// where link(2) fails with EEXIST for every racer but one, across processes too), and the
/// directory is fsynced. Readers therefore never see a partial object. Blocking calls run on a
/// NIO thread pool, never on the cooperative pool.
public final class FileObjectStore: ObjectStore {
    /// The directory holding the objects.
    public let directory: String
    public let stats = ObjectStoreStats()
    private let pool: NIOThreadPool
    private let logger: Logger

    /// Opens (creating if needed) the store rooted at `directory`, an absolute path.
    public init(directory: String, logger: Logger, threadPool: NIOThreadPool = .singleton) throws {
        guard directory.hasPrefix("/") else { throw ObjectStoreError.invalidURL("not an absolute path: \(directory)") }
        self.directory = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        self.pool = threadPool
        self.logger = logger
        try Self.makeDirectories(self.directory)
    }

    public func put(_ key: String, _ data: ByteBuffer) async throws {
        let path = try path(for: key)
        try await run(sent: data.readableBytes) { [directory] in
            let temporary = try Self.writeTemporary(in: directory, data)
            guard rename(temporary, path) == 0 else {
                let error = errno
                unlink(temporary)
                throw Self.ioError("rename to \(path)", error)
            }
            try Self.syncDirectory(directory)
        }
    }

    public func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool {
        let path = try path(for: key)
        return try await run(sent: data.readableBytes) { [directory] in
            let temporary = try Self.writeTemporary(in: directory, data)
            defer { unlink(temporary) }
            if link(temporary, path) != 0 {
                let error = errno
                if error == EEXIST { return false }
                throw Self.ioError("link to \(path)", error)
            }
            try Self.syncDirectory(directory)
            return true
        }
    }

    public func get(_ key: String) async throws -> ByteBuffer {
        let path = try path(for: key)
        let buffer = try await run { () throws -> ByteBuffer in
            let fd = try Self.openForReading(path, key: key)
            defer { close(fd) }
            let size = try Self.fileSize(fd, path: path)
            return try Self.readFully(fd, offset: 0, count: size, path: path)
        }
        stats.update { $0.bytesReceived += buffer.readableBytes }
        return buffer
    }

    public func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
        let path = try path(for: key)
        guard range.lowerBound >= 0 else { throw ObjectStoreError.invalidRange(key: key, range: range) }
        if range.isEmpty { return ByteBuffer() }
        stats.update { $0.rangedGets += 1 }
        let buffer = try await run { () throws -> ByteBuffer in
            let fd = try Self.openForReading(path, key: key)
            defer { close(fd) }
            let size = try Self.fileSize(fd, path: path)
            guard range.lowerBound < size else { throw ObjectStoreError.invalidRange(key: key, range: range) }
            return try Self.readFully(fd, offset: range.lowerBound, count: min(range.upperBound, size) - range.lowerBound, path: path)
        }
        stats.update { $0.bytesReceived += buffer.readableBytes }
        return buffer
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        let path = try path(for: key)
        return try await run { () throws -> ObjectInfo? in
            var info = stat()
            if stat(path, &info) != 0 {
                let error = errno
                if error == ENOENT { return nil }
                throw Self.ioError("stat \(path)", error)
            }
            return ObjectInfo(key: key, size: Int(info.st_size), etag: Self.etag(info))
        }
    }

    public func delete(_ key: String) async throws {
        try await delete([key])
    }

    public func delete(_ keys: [String]) async throws {
        let paths = try keys.map { try path(for: $0) }
        if paths.isEmpty { return }
        try await run { [directory] in
            for path in paths where unlink(path) != 0 {
                let error = errno
                if error != ENOENT { throw Self.ioError("unlink \(path)", error) }
            }
            try Self.syncDirectory(directory)
        }
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        try await run { [directory] () throws -> [ObjectInfo] in
            guard let dir = opendir(directory) else { throw Self.ioError("opendir \(directory)", errno) }
            defer { closedir(dir) }
            var result: [ObjectInfo] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                }
                // Dot names are temporaries (and . and ..): never objects.
                guard !name.hasPrefix("."), let key = Self.decodeFileName(name), key.hasPrefix(prefix) else { continue }
                var info = stat()
                // A concurrent delete between readdir and stat just drops the entry.
                guard stat(directory + "/" + name, &info) == 0 else { continue }
                result.append(ObjectInfo(key: key, size: Int(info.st_size), etag: Self.etag(info)))
            }
            result.sort { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            return result
        }
    }

    /// Removes temporaries older than `age` seconds left by processes that died mid-write; returns how many.
    public func removeStaleTemporaries(olderThanSeconds age: Int) async throws -> Int {
        try await run { [directory] () throws -> Int in
            guard let dir = opendir(directory) else { throw Self.ioError("opendir \(directory)", errno) }
            defer { closedir(dir) }
            let now = time(nil)
            var removed = 0
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                }
                guard name.hasPrefix(".tmp-") else { continue }
                var info = stat()
                let path = directory + "/" + name
                if stat(path, &info) == 0, Int(now - info.st_mtim.tv_sec) > age, unlink(path) == 0 { removed += 1 }
            }
            return removed
        }
    }

    // MARK: - Helpers

    private func run<T: Sendable>(sent: Int = 0, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        stats.update {
            $0.requests += 1
            $0.bytesSent += sent
        }
        do {
            return try await pool.runIfActive(body)
        } catch {
            stats.update { $0.failures += 1 }
            throw error
        }
    }

    private func path(for key: String) throws -> String {
        guard !key.isEmpty else { throw ObjectStoreError.invalidKey("empty key") }
        let name = Self.encodeFileName(key)
        guard name.utf8.count <= 255 else { throw ObjectStoreError.invalidKey("key too long for a file name: \(key.prefix(64))…") }
        return directory + "/" + name
    }

    static func encodeFileName(_ key: String) -> String {
        // A leading `.` is encoded: dot-named files are the temporaries, never objects.
        percentEncode(key) { byte, index in isPlainASCII(byte) || (byte == UInt8(ascii: ".") && index > 0) }
    }

    static func decodeFileName(_ name: String) -> String? {
        guard !name.contains("+") else { return nil }
        return percentDecode(name)
    }

    private static func etag(_ info: stat) -> String {
        "\(info.st_size)-\(info.st_mtim.tv_sec)\(info.st_mtim.tv_nsec)-\(info.st_ino)"
    }

    private static func ioError(_ what: String, _ error: Int32) -> ObjectStoreError {
        .transport("\(what): \(String(cString: strerror(error)))")
    }

    private static func makeDirectories(_ path: String) throws {
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST { throw ioError("mkdir \(current)", errno) }
        }
    }

    private static func syncDirectory(_ directory: String) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw ioError("open \(directory)", errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("fsync \(directory)", errno) }
    }

    private static func writeTemporary(in directory: String, _ data: ByteBuffer) throws -> String {
        var random = SystemRandomNumberGenerator()
        let path = directory + "/.tmp-\(getpid())-\(String(random.next(), radix: 16))"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ioError("create \(path)", errno) }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(path) }
        }
        try data.withUnsafeReadableBytes { bytes in
            var written = 0
            while written < bytes.count {
                let result = write(fd, bytes.baseAddress! + written, bytes.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    throw ioError("write \(path)", errno)
                }
                written += result
            }
        }
        guard fsync(fd) == 0 else { throw ioError("fsync \(path)", errno) }
        ok = true
        return path
    }

    private static func openForReading(_ path: String, key: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let error = errno
            if error == ENOENT { throw ObjectStoreError.notFound(key: key) }
            throw ioError("open \(path)", error)
        }
        return fd
    }

    private static func fileSize(_ fd: Int32, path: String) throws -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ioError("fstat \(path)", errno) }
        return Int(info.st_size)
    }

    private static func readFully(_ fd: Int32, offset: Int, count: Int, path: String) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { bytes in
            var done = 0
            while done < count {
                let result = pread(fd, bytes.baseAddress! + done, count - done, off_t(offset + done))
                if result < 0 {
                    if errno == EINTR { continue }
                    throw ioError("read \(path)", errno)
                }
                // Objects are immutable once published, so a short file here means it was replaced mid-read.
                if result == 0 { throw ObjectStoreError.corrupt("\(path) ended at \(offset + done) while reading") }
                done += result
            }
            return done
        }
        return buffer
    }
}
