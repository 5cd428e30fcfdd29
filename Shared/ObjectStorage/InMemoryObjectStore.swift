import NIOConcurrencyHelpers
import NIOCore

/// An object store in process memory, for unit tests of code that uses a store. Same semantics
/// as the real stores (ranges, conditional create, listing order); nothing survives the process.
public final class InMemoryObjectStore: ObjectStore {
    public let stats = ObjectStoreStats()
    private let objects = NIOLockedValueBox<[String: (data: ByteBuffer, version: Int)]>([:])
    private let versions = ManagedAtomicCounter()

    public init() {}

    public func put(_ key: String, _ data: ByteBuffer) async throws {
        try Self.check(key)
        count(sent: data.readableBytes)
        let version = versions.next()
        objects.withLockedValue { $0[key] = (data, version) }
    }

    public func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws -> Bool {
        try Self.check(key)
        count(sent: data.readableBytes)
        let version = versions.next()
        return objects.withLockedValue { objects in
            guard objects[key] == nil else { return false }
            objects[key] = (data, version)
            return true
        }
    }

    public func get(_ key: String) async throws -> ByteBuffer {
        count()
        guard let object = objects.withLockedValue({ $0[key] }) else { throw ObjectStoreError.notFound(key: key) }
        stats.update { $0.bytesReceived += object.data.readableBytes }
        return object.data
    }

    public func get(_ key: String, range: Range<Int>) async throws -> ByteBuffer {
        guard range.lowerBound >= 0 else { throw ObjectStoreError.invalidRange(key: key, range: range) }
        if range.isEmpty { return ByteBuffer() }
        count()
        stats.update { $0.rangedGets += 1 }
        guard let data = objects.withLockedValue({ $0[key]?.data }) else { throw ObjectStoreError.notFound(key: key) }
        guard range.lowerBound < data.readableBytes else { throw ObjectStoreError.invalidRange(key: key, range: range) }
        let slice = data.getSlice(at: data.readerIndex + range.lowerBound, length: min(range.upperBound, data.readableBytes) - range.lowerBound)!
        stats.update { $0.bytesReceived += slice.readableBytes }
        return slice
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        count()
        return objects.withLockedValue { $0[key] }.map { ObjectInfo(key: key, size: $0.data.readableBytes, etag: "v\($0.version)") }
    }

    public func delete(_ key: String) async throws {
        count()
        _ = objects.withLockedValue { $0.removeValue(forKey: key) }
    }

    public func delete(_ keys: [String]) async throws {
        count()
        objects.withLockedValue { objects in
            for key in keys { objects.removeValue(forKey: key) }
        }
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        count()
        return objects.withLockedValue { objects in
            objects.filter { $0.key.hasPrefix(prefix) }
                .map { ObjectInfo(key: $0.key, size: $0.value.data.readableBytes, etag: "v\($0.value.version)") }
        }.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
    }

    private func count(sent: Int = 0) {
        stats.update {
            $0.requests += 1
            $0.bytesSent += sent
        }
    }

    private static func check(_ key: String) throws {
        guard !key.isEmpty, key.utf8.count <= 1024 else { throw ObjectStoreError.invalidKey("key must be 1...1024 bytes") }
    }
}

/// A locked counter (versions double as etags, so replacing an object changes its etag).
final class ManagedAtomicCounter: Sendable {
    private let value = NIOLockedValueBox(0)

    func next() -> Int {
        value.withLockedValue {
            $0 += 1
            return $0
        }
    }
}
