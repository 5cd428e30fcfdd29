import ClusterMetadata
import ObjectStorage

/// One committed object range a read can use: stream offsets [startOffset, endOffset) held by
/// the object at `key` of `objectSize` bytes.
public struct CommittedSegment: Sendable, Hashable {
    /// The object's metadata id.
    public var objectId: ObjectID
    /// Its key in the object store.
    public var key: String
    /// Its size as committed; the footer sits at the end of exactly this many bytes.
    public var objectSize: Int64
    /// First offset of the stream this object serves.
    public var startOffset: Int64
    /// One past the last offset of the stream this object serves.
    public var endOffset: Int64

    /// A segment from its parts (normally made by `committedSegments(in:stream:from:)`).
    public init(objectId: ObjectID, key: String, objectSize: Int64, startOffset: Int64, endOffset: Int64) {
        self.objectId = objectId
        self.key = key
        self.objectSize = objectSize
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

/// Where stream `stream`'s committed data from `offset` lives, in offset order, with keys and
/// sizes resolved from the object records. Empty when `offset` is at or past the committed end.
/// Stops before the first location whose object record is missing or not committed, so a reader
/// never silently skips offsets.
public func committedSegments(in state: MetadataState, stream: StreamID, from offset: Int64) -> [CommittedSegment] {
    var segments: [CommittedSegment] = []
    for location in state.objects(covering: stream, from: offset) {
        guard let record = state.objects[location.objectId], record.state == .committed else { break }
        segments.append(CommittedSegment(
            objectId: location.objectId,
            key: ObjectKey.make(id: location.objectId, metadataCode: record.kind.rawValue),
            objectSize: record.size, startOffset: location.startOffset, endOffset: location.endOffset))
    }
    return segments
}
