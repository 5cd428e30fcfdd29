import DequeModule

/// The in-memory log: entries after the last compaction point.
struct RaftLog: Sendable {
    /// Index of the last entry removed by compaction (or covered by a snapshot); 0 initially.
    private(set) var startIndex: RaftIndex
    /// Term of the entry at `startIndex`.
    private(set) var startTerm: RaftTerm
    /// `entries[k].index == startIndex + 1 + k`.
    private(set) var entries: Deque<RaftLogEntry>

    init(startIndex: RaftIndex = 0, startTerm: RaftTerm = 0) {
        self.startIndex = startIndex
        self.startTerm = startTerm
        entries = []
    }

    var lastIndex: RaftIndex { startIndex + RaftIndex(entries.count) }
    var lastTerm: RaftTerm { entries.last?.term ?? startTerm }

    func term(at index: RaftIndex) -> RaftTerm? {
        if index == startIndex { return startTerm }
        guard index > startIndex, index <= lastIndex else { return nil }
        return entries[Int(index - startIndex - 1)].term
    }

    func entry(at index: RaftIndex) -> RaftLogEntry? {
        guard index > startIndex, index <= lastIndex else { return nil }
        return entries[Int(index - startIndex - 1)]
    }

    /// Entries from `from` through `through`, at most `maxCount` and `maxBytes` (but at least one).
    func slice(from: RaftIndex, through: RaftIndex, maxCount: Int = .max, maxBytes: Int = .max) -> [RaftLogEntry] {
        guard from > startIndex, from <= through, through <= lastIndex else { return [] }
        var result: [RaftLogEntry] = []
        var bytes = 0
        var index = from
        while index <= through, result.count < maxCount {
            let entry = entries[Int(index - startIndex - 1)]
            if !result.isEmpty, bytes + entry.accountedBytes > maxBytes { break }
            bytes += entry.accountedBytes
            result.append(entry)
            index += 1
        }
        return result
    }

    mutating func append(_ entry: RaftLogEntry) {
        entries.append(entry)
    }

    /// Removes entries with index >= `index` (never below the compaction point).
    mutating func truncate(from index: RaftIndex) {
        guard index <= lastIndex else { return }
        let keep = index > startIndex ? Int(index - startIndex - 1) : 0
        entries.removeLast(entries.count - keep)
    }

    /// Drops entries through `index`, which must be in the log.
    mutating func compact(through index: RaftIndex) {
        guard index > startIndex, let term = term(at: index) else { return }
        entries.removeFirst(Int(index - startIndex))
        startIndex = index
        startTerm = term
    }

    /// Replaces everything with an empty log starting after a snapshot.
    mutating func reset(startIndex: RaftIndex, startTerm: RaftTerm) {
        self = RaftLog(startIndex: startIndex, startTerm: startTerm)
    }

    /// The first index of the run of `term` that contains `index`.
    func firstIndex(ofTermAt index: RaftIndex) -> RaftIndex {
        guard let term = term(at: index) else { return index }
        var first = index
        while first > startIndex + 1, self.term(at: first - 1) == term { first -= 1 }
        return first
    }

    /// The last index at or before `index` whose term is `term`, if the log holds one.
    func lastIndex(ofTerm term: RaftTerm, atOrBefore index: RaftIndex) -> RaftIndex? {
        var candidate = min(index, lastIndex)
        while candidate > startIndex, let t = self.term(at: candidate), t > term { candidate -= 1 }
        return self.term(at: candidate) == term ? candidate : nil
    }
}
