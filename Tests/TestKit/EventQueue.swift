/// A binary min-heap of timed events for simulations; ties break by insertion order so runs are reproducible.
public struct EventQueue<Payload> {
    private var items: [(time: UInt64, order: UInt64, payload: Payload)] = []
    private var counter: UInt64 = 0

    /// An empty queue.
    public init() {}

    public var isEmpty: Bool { items.isEmpty }

    private static func less(_ a: (time: UInt64, order: UInt64, payload: Payload), _ b: (time: UInt64, order: UInt64, payload: Payload)) -> Bool {
        a.time != b.time ? a.time < b.time : a.order < b.order
    }

    public mutating func push(_ time: UInt64, _ payload: Payload) {
        counter += 1
        items.append((time, counter, payload))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.less(items[child], items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    public mutating func pop() -> (time: UInt64, payload: Payload)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = parent * 2 + 1, right = left + 1
            var smallest = parent
            if left < items.count, Self.less(items[left], items[smallest]) { smallest = left }
            if right < items.count, Self.less(items[right], items[smallest]) { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return (top.time, top.payload)
    }
}
