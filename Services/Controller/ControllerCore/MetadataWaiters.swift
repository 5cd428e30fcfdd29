/// Who waits on the controller and until when: FetchMetadata long polls wait for a version after the one they
/// have, status waiters for any change of the Raft status or the applied index; each gives up at its deadline.
/// A deterministic state machine: every input returns the ids of the waiters to wake, in id order; the driver
/// holds the continuations and one timer for `nextDeadline`.
public struct MetadataWaiters: Sendable {
    /// What a waiter waits for.
    public enum Kind: Sendable, Hashable {
        /// A long poll for a version after `version`.
        case fetch(after: UInt64)
        /// Any status change or applied entry.
        case status
    }

    private struct Waiter {
        var kind: Kind
        var deadline: Duration
    }

    private var waiting: [UInt64: Waiter] = [:]
    private var nextID: UInt64 = 0

    /// No one waiting.
    public init() {}

    /// Long polls waiting.
    public var fetchCount: Int { waiting.values.reduce(0) { $1.kind == .status ? $0 : $0 + 1 } }

    /// Whether waiter `id` still waits.
    public func contains(_ id: UInt64) -> Bool { waiting[id] != nil }

    /// The earliest deadline of anyone waiting.
    public var nextDeadline: Duration? { waiting.values.lazy.map(\.deadline).min() }

    /// Registers a waiter; returns its id.
    public mutating func add(_ kind: Kind, deadline: Duration) -> UInt64 {
        let id = nextID
        nextID += 1
        waiting[id] = Waiter(kind: kind, deadline: deadline)
        return id
    }

    /// Entries through `version` are applied: wakes long polls for an earlier version and every status waiter.
    public mutating func applied(through version: UInt64) -> [UInt64] {
        remove { waiter in
            switch waiter.kind {
            case let .fetch(after): after < version
            case .status: true
            }
        }
    }

    /// The Raft status changed: wakes every status waiter.
    public mutating func statusChanged() -> [UInt64] {
        remove { $0.kind == .status }
    }

    /// Wakes everyone whose deadline is at or before `now`.
    public mutating func expire(now: Duration) -> [UInt64] {
        remove { $0.deadline <= now }
    }

    /// Wakes every long poll (the controller is draining: it answers them at once).
    public mutating func wakeFetches() -> [UInt64] {
        remove { $0.kind != .status }
    }

    /// Wakes everyone.
    public mutating func wakeAll() -> [UInt64] {
        remove { _ in true }
    }

    /// Wakes waiter `id` alone (its request was cancelled); empty when it no longer waits.
    public mutating func wake(_ id: UInt64) -> [UInt64] {
        waiting.removeValue(forKey: id) == nil ? [] : [id]
    }

    private mutating func remove(where condition: (Waiter) -> Bool) -> [UInt64] {
        let woken = waiting.filter { condition($0.value) }.keys.sorted()
        for id in woken { waiting[id] = nil }
        return woken
    }
}
