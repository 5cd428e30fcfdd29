/// What applying a write produced and at which index; the table below keeps it so a retry gets the same answer.
public struct AppliedWrite: Sendable, Hashable {
    /// What `apply` returned.
    public var result: MetadataResult
    /// The log index it was applied at.
    public var index: UInt64

    /// A result at an index.
    public init(result: MetadataResult, index: UInt64) {
        self.result = result
        self.index = index
    }
}

/// The results of the most recent identified writes by id, the oldest forgotten first.
///
/// Writes are remembered in apply order, which is index order, so the eviction order follows from the
/// entries alone: two tables with the same entries are equal however their storage was laid out.
public struct RememberedWrites: Sendable, Equatable {
    private var entries: [WriteID: AppliedWrite] = [:]
    /// Ids in apply order; those before `head` are forgotten. Compacted now and then so it stays bounded.
    private var order: [WriteID] = []
    private var head = 0

    /// An empty table.
    public init() {}

    /// How many writes are remembered.
    public var count: Int { entries.count }

    /// Whether no write is remembered.
    public var isEmpty: Bool { entries.isEmpty }

    /// The remembered outcome of write `id`, if it is still remembered.
    public subscript(id: WriteID) -> AppliedWrite? { entries[id] }

    /// Remembered writes, oldest first.
    public var inApplyOrder: [(id: WriteID, write: AppliedWrite)] {
        order[head...].compactMap { id in entries[id].map { (id, $0) } }
    }

    /// Remembers a write not remembered yet, then forgets the oldest until at most `limit` remain.
    mutating func remember(_ id: WriteID, _ write: AppliedWrite, limit: Int) {
        guard entries.updateValue(write, forKey: id) == nil else { return }
        order.append(id)
        while entries.count > max(0, limit), head < order.count {
            entries[order[head]] = nil
            head += 1
        }
        // Dropping the forgotten prefix costs a copy of the live ids, so do it only once it is as long as they are.
        if head >= 1024, head * 2 >= order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    public static func == (lhs: RememberedWrites, rhs: RememberedWrites) -> Bool {
        lhs.entries == rhs.entries
    }
}
