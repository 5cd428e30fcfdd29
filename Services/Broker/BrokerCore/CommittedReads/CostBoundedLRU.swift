/// A least-recently-used map whose entries each have a cost (bytes, or 1 per entry), holding at
/// most `capacity` total cost at all times. Not thread-safe: owners guard it with a lock.
struct CostBoundedLRU<Key: Hashable, Value> {
    fileprivate struct Node {
        var key: Key
        var value: Value
        var cost: Int
        var newer: Int?
        var older: Int?
    }

    /// Upper bound on the summed cost of the entries.
    let capacity: Int
    /// Summed cost of the entries.
    private(set) var totalCost = 0
    // Nodes live in an array linked by index, so touching an entry allocates nothing.
    private var nodes: [Node?] = []
    private var free: [Int] = []
    private var slots: [Key: Int] = [:]
    private var newest: Int?
    private var oldest: Int?

    init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    var count: Int { slots.count }

    /// The value for `key`, marking it most recently used.
    mutating func value(for key: Key) -> Value? {
        guard let slot = slots[key], let node = nodes[slot] else { return nil }
        unlink(slot)
        linkAsNewest(slot)
        return node.value
    }

    /// Whether `key` is present, without touching its recency.
    func contains(_ key: Key) -> Bool { slots[key] != nil }

    /// Stores `value`, evicting the least recently used entries until it fits. Returns nil when
    /// the value alone costs more than the capacity (nothing is stored or evicted), otherwise the
    /// number of entries evicted.
    mutating func insert(_ value: Value, for key: Key, cost: Int) -> Int? {
        let cost = max(0, cost)
        guard cost <= capacity else { return nil }
        remove(key)
        var evicted = 0
        while totalCost + cost > capacity, let victim = oldest {
            removeSlot(victim)
            evicted += 1
        }
        let node = Node(key: key, value: value, cost: cost, newer: nil, older: nil)
        let slot: Int
        if let reused = free.popLast() {
            nodes[reused] = node
            slot = reused
        } else {
            nodes.append(node)
            slot = nodes.count - 1
        }
        slots[key] = slot
        totalCost += cost
        linkAsNewest(slot)
        return evicted
    }

    /// Drops `key` if present.
    mutating func remove(_ key: Key) {
        if let slot = slots[key] { removeSlot(slot) }
    }

    /// Keys from most to least recently used (for tests and debugging).
    var keysByRecency: [Key] {
        var keys: [Key] = []
        var cursor = newest
        while let slot = cursor, let node = nodes[slot] {
            keys.append(node.key)
            cursor = node.older
        }
        return keys
    }

    private mutating func removeSlot(_ slot: Int) {
        guard let node = nodes[slot] else { return }
        unlink(slot)
        slots[node.key] = nil
        totalCost -= node.cost
        nodes[slot] = nil
        free.append(slot)
    }

    private mutating func unlink(_ slot: Int) {
        guard let node = nodes[slot] else { return }
        if let newer = node.newer { nodes[newer]?.older = node.older } else { newest = node.older }
        if let older = node.older { nodes[older]?.newer = node.newer } else { oldest = node.newer }
        nodes[slot]?.newer = nil
        nodes[slot]?.older = nil
    }

    private mutating func linkAsNewest(_ slot: Int) {
        nodes[slot]?.older = newest
        nodes[slot]?.newer = nil
        if let previous = newest { nodes[previous]?.newer = slot }
        newest = slot
        if oldest == nil { oldest = slot }
    }
}

extension CostBoundedLRU: Sendable where Key: Sendable, Value: Sendable {}
extension CostBoundedLRU.Node: Sendable where Key: Sendable, Value: Sendable {}
