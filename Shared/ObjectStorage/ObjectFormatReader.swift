import NIOCore

/// The decoded, verified index of an object.
public struct ObjectIndex: Hashable, Sendable {
    /// Total object size in bytes.
    public var objectSize: Int
    /// Where the index starts (the blocks end here).
    public var indexPosition: Int
    /// Entries in position order.
    public var entries: [BlockIndexEntry]

    /// Entries of one stream, in offset order.
    public func entries(stream: UInt64) -> [BlockIndexEntry] {
        entries.filter { $0.streamID == stream }
    }

    /// Parses and checks a whole object's footer and index (for objects already in memory).
    public static func decode(object: ByteBuffer) throws(ObjectStoreError) -> ObjectIndex {
        guard let index = try decode(tail: object, objectSize: object.readableBytes) else {
            throw .corrupt("index does not fit in the object")
        }
        return index
    }

    /// Footer fields, checked for magic, version and bounds against `objectSize`.
    struct Footer {
        var indexPosition: Int
        var indexLength: Int
        var crc: UInt32
    }

    static func decodeFooter(tail: ByteBuffer, objectSize: Int) throws(ObjectStoreError) -> Footer {
        guard objectSize >= ObjectFormat.footerSize, tail.readableBytes >= ObjectFormat.footerSize, tail.readableBytes <= objectSize else {
            throw .corrupt("object of \(objectSize) bytes is too short for a footer")
        }
        var footer = tail.getSlice(at: tail.writerIndex - ObjectFormat.footerSize, length: ObjectFormat.footerSize)!
        guard let indexPosition = footer.readInteger(as: UInt64.self),
              let indexLength = footer.readInteger(as: UInt32.self),
              let version = footer.readInteger(as: UInt16.self),
              footer.readInteger(as: UInt16.self) != nil,
              let crc = footer.readInteger(as: UInt32.self),
              let magic = footer.readBytes(length: 8)
        else { throw .corrupt("short footer") }
        guard magic == ObjectFormat.magic else { throw .corrupt("bad magic") }
        guard version == ObjectFormat.version else { throw .corrupt("unsupported format version \(version)") }
        guard indexLength >= 4, indexPosition <= UInt64(objectSize),
              Int(indexPosition) + Int(indexLength) + ObjectFormat.footerSize == objectSize
        else { throw .corrupt("index position \(indexPosition)/length \(indexLength) do not fit an object of \(objectSize) bytes") }
        return Footer(indexPosition: Int(indexPosition), indexLength: Int(indexLength), crc: crc)
    }

    /// Decodes from the last bytes of an object. Returns nil if `tail` is too short to hold the
    /// whole index (then fetch `indexRange(tail:objectSize:)` and call `decode(index:tail:objectSize:)`).
    public static func decode(tail: ByteBuffer, objectSize: Int) throws(ObjectStoreError) -> ObjectIndex? {
        let footer = try decodeFooter(tail: tail, objectSize: objectSize)
        let needed = footer.indexLength + ObjectFormat.footerSize
        guard tail.readableBytes >= needed else { return nil }
        let index = tail.getSlice(at: tail.writerIndex - needed, length: footer.indexLength)!
        return try decode(index: index, footer: footer, tail: tail, objectSize: objectSize)
    }

    /// The byte range of the index, read from the footer at the end of `tail`.
    public static func indexRange(tail: ByteBuffer, objectSize: Int) throws(ObjectStoreError) -> Range<Int> {
        let footer = try decodeFooter(tail: tail, objectSize: objectSize)
        return footer.indexPosition..<(footer.indexPosition + footer.indexLength)
    }

    /// Decodes an index fetched separately; `tail` must still end with the footer.
    public static func decode(index: ByteBuffer, tail: ByteBuffer, objectSize: Int) throws(ObjectStoreError) -> ObjectIndex {
        let footer = try decodeFooter(tail: tail, objectSize: objectSize)
        guard index.readableBytes == footer.indexLength else { throw .corrupt("index read returned \(index.readableBytes) of \(footer.indexLength) bytes") }
        return try decode(index: index, footer: footer, tail: tail, objectSize: objectSize)
    }

    private static func decode(index: ByteBuffer, footer: Footer, tail: ByteBuffer, objectSize: Int) throws(ObjectStoreError) -> ObjectIndex {
        let footerFields = tail.getSlice(at: tail.writerIndex - ObjectFormat.footerSize, length: 16)!
        let crc = ObjectFormat.crc32c(footerFields, crc: ObjectFormat.crc32c(index))
        guard crc == footer.crc else { throw .corrupt("index checksum mismatch") }
        var reader = index
        guard let count = reader.readInteger(as: UInt32.self), Int(count) * ObjectFormat.indexEntrySize == reader.readableBytes else {
            throw .corrupt("index length \(footer.indexLength) does not match its entry count")
        }
        var entries: [BlockIndexEntry] = []
        entries.reserveCapacity(Int(count))
        var expectedPosition: UInt64 = 0
        for _ in 0..<count {
            guard let streamID = reader.readInteger(as: UInt64.self),
                  let firstOffset = reader.readInteger(as: Int64.self),
                  let endOffset = reader.readInteger(as: Int64.self),
                  let recordCount = reader.readInteger(as: Int32.self),
                  let maxTimestamp = reader.readInteger(as: Int64.self),
                  let position = reader.readInteger(as: UInt64.self),
                  let length = reader.readInteger(as: UInt32.self),
                  let blockCRC = reader.readInteger(as: UInt32.self)
            else { throw .corrupt("short index entry") }
            // Blocks tile the data region exactly: no gaps, overlaps or blocks past the index.
            guard position == expectedPosition, length > 0 else {
                throw .corrupt("block at \(position) (length \(length)) overlaps or leaves a gap; expected \(expectedPosition)")
            }
            expectedPosition = position + UInt64(length)
            guard expectedPosition <= UInt64(footer.indexPosition) else { throw .corrupt("block at \(position) runs into the index") }
            guard endOffset > firstOffset, recordCount >= 0 else { throw .corrupt("block at \(position) has offsets \(firstOffset)..<\(endOffset)") }
            entries.append(BlockIndexEntry(
                streamID: streamID, firstOffset: firstOffset, endOffset: endOffset, recordCount: recordCount,
                maxTimestamp: maxTimestamp, position: position, length: length, crc: blockCRC
            ))
        }
        guard expectedPosition == UInt64(footer.indexPosition) else { throw .corrupt("blocks end at \(expectedPosition), index starts at \(footer.indexPosition)") }
        return ObjectIndex(objectSize: objectSize, indexPosition: footer.indexPosition, entries: entries)
    }

    /// Checks a block's bytes against its entry.
    public static func verify(block: ByteBuffer, entry: BlockIndexEntry) throws(ObjectStoreError) {
        guard block.readableBytes == Int(entry.length) else {
            throw .corrupt("block at \(entry.position) is \(block.readableBytes) bytes, index says \(entry.length)")
        }
        guard ObjectFormat.crc32c(block) == entry.crc else { throw .corrupt("block at \(entry.position) checksum mismatch") }
    }
}

/// Reads objects from a store: one ranged GET for footer and index (two if the index is larger
/// than the first guess), one per block.
public struct ObjectReader: Sendable {
    public let store: any ObjectStore
    /// Trailing bytes fetched on the first read.
    public let tailRead: Int

    public init(store: any ObjectStore, tailRead: Int = ObjectFormat.defaultTailRead) {
        self.store = store
        self.tailRead = max(ObjectFormat.footerSize, tailRead)
    }

    /// Fetches and verifies the index of the object at `key` of `objectSize` bytes.
    public func index(key: String, objectSize: Int) async throws -> ObjectIndex {
        guard objectSize >= ObjectFormat.footerSize else { throw ObjectStoreError.corrupt("\(key): \(objectSize) bytes is too short") }
        let start = max(0, objectSize - tailRead)
        let tail = try await store.get(key, range: start..<objectSize)
        guard tail.readableBytes == objectSize - start else {
            throw ObjectStoreError.corrupt("\(key): expected \(objectSize) bytes, the store has fewer")
        }
        if let index = try ObjectIndex.decode(tail: tail, objectSize: objectSize) { return index }
        let range = try ObjectIndex.indexRange(tail: tail, objectSize: objectSize)
        let index = try await store.get(key, range: range)
        return try ObjectIndex.decode(index: index, tail: tail, objectSize: objectSize)
    }

    /// Fetches the index when the size is not known (one HEAD more).
    public func index(key: String) async throws -> ObjectIndex {
        guard let info = try await store.head(key) else { throw ObjectStoreError.notFound(key: key) }
        return try await index(key: key, objectSize: info.size)
    }

    /// Fetches and verifies one block.
    public func block(key: String, entry: BlockIndexEntry) async throws -> ByteBuffer {
        let block = try await store.get(key, range: entry.byteRange)
        try ObjectIndex.verify(block: block, entry: entry)
        return block
    }
}
