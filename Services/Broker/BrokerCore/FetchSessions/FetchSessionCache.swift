import KafkaProtocol
import OrderedCollections

/// KIP-227 incremental fetch sessions, as a deterministic state machine: a request's session id and
/// epoch, its partitions and its forgotten topics go in (`begin`); out come the partitions to fetch
/// (every partition of the session for an incremental request), and once they are fetched
/// (`finish`) the new session state and which partitions the answer names. No clock reads, no
/// system randomness: time comes in as milliseconds, session ids from the generator `finish` is given.
///
/// - Session id 0 and epoch 0: a full request that creates a session (its id is in the answer, or
///   0 when the cache has no room). Epoch -1: a full request without a session. A non-zero id with
///   epoch 0 or -1 first closes that session.
/// - A non-zero id with epoch E > 0: incremental. The session must exist (else
///   FETCH_SESSION_ID_NOT_FOUND) and expect E (else INVALID_FETCH_SESSION_EPOCH). Forgotten
///   partitions leave it, listed ones join it or replace their fetch position, and the answer
///   names only partitions with records, an error, or a high watermark, last stable offset, log
///   start offset or preferred read replica other than the one last reported.
/// - The cache holds at most `slots` sessions and `maxPartitions` partitions in all. When a new
///   session does not fit, it evicts the least recently used session if that one has been idle for
///   at least `minEvictionAgeMs`, else the smallest session if it has fewer partitions (repeatedly,
///   while it still does not fit); otherwise it is not created and the client goes on with full
///   requests. An incremental request that would take the cache past `maxPartitions` closes its
///   session (FETCH_SESSION_ID_NOT_FOUND: the client starts over with a full request).
struct FetchSessionCache: Sendable {
    /// A partition as requests name it: by topic name (Fetch v7–v12, `topicId` zero) or by topic id
    /// (v13 on, `topic` empty).
    struct PartitionRef: Hashable, Sendable, CustomStringConvertible {
        var topic: String
        var topicId: KafkaUUID
        var partition: Int32

        init(topic: String, topicId: KafkaUUID = .zero, partition: Int32) {
            self.topic = topic
            self.topicId = topicId
            self.partition = partition
        }

        var description: String { topic.isEmpty ? "\(topicId)-\(partition)" : "\(topic)-\(partition)" }
    }

    /// What a client asks of one partition. An incremental request names a partition again only
    /// when this changes.
    struct Position: Hashable, Sendable {
        var fetchOffset: Int64
        var partitionMaxBytes: Int32
        var logStartOffset: Int64 = -1
        var currentLeaderEpoch: Int32 = -1
        var lastFetchedEpoch: Int32 = -1
    }

    /// What an answer told the client about a partition besides its records. An incremental answer
    /// names a partition again when this changes.
    struct Reported: Hashable, Sendable {
        var highWatermark: Int64
        var lastStableOffset: Int64
        var logStartOffset: Int64
        var preferredReadReplica: Int32 = -1
    }

    struct Configuration: Sendable, Hashable {
        /// Kafka's `max.incremental.fetch.session.cache.slots`; 0 turns sessions off.
        var slots: Int
        /// How long a session must have been idle before any new session may evict it.
        var minEvictionAgeMs: Int64
        /// Partitions all sessions together may hold: what bounds the cache's memory with `slots`.
        var maxPartitions: Int
    }

    /// The session part of one Fetch request.
    struct Request: Sendable {
        var sessionId: Int32
        var sessionEpoch: Int32
        /// Fetch v13 on: partitions are named by topic id.
        var usesTopicIds: Bool
        /// The partitions the request lists, in request order.
        var partitions: [(ref: PartitionRef, position: Position)]
        /// ForgottenTopicsData, flattened.
        var forgotten: [PartitionRef] = []
    }

    /// One partition to fetch, with what was last reported for it (nil: never, or an error).
    struct Planned: Sendable, Hashable {
        var ref: PartitionRef
        var position: Position
        var reported: Reported?
    }

    /// What a request's answer is made of.
    struct Plan: Sendable {
        enum Kind: Sendable, Hashable {
            /// Epoch -1 (or an incremental request that emptied its session): no session.
            case sessionless
            /// Epoch 0: a session is created from the answer, if there is room.
            case creating
            /// Epoch > 0 of a live session (`generation` tells a session from a later one that reuses its id).
            case incremental(sessionId: Int32, generation: UInt64)
        }

        var kind: Kind
        /// Fetch v13 on: partitions are named by topic id.
        var usesTopicIds: Bool
        /// In request order for full requests; every partition of the session, in session order, for incremental ones.
        var partitions: [Planned]

        var isIncremental: Bool {
            if case .incremental = kind { true } else { false }
        }
    }

    /// What `begin` decided.
    enum Begin: Sendable {
        /// The request is refused as a whole (top-level error code, no partitions, session id 0).
        case refused(KafkaErrorCode)
        case fetch(Plan)
    }

    /// What the fetch found for one planned partition.
    struct Outcome: Sendable, Hashable {
        /// What the answer says about the partition; nil when it carries an error.
        var reported: Reported?
        var returnedRecords: Bool
    }

    /// What `finish` decided.
    struct Answer: Sendable, Hashable {
        /// The session id the answer carries (0: none).
        var sessionId: Int32
        /// Indices into the plan's partitions, in the order the answer lists them.
        var include: [Int]
        /// The sessions the new one evicted.
        var evicted: [Int32] = []
    }

    struct CachedPartition: Sendable, Hashable {
        var position: Position
        var reported: Reported?
    }

    struct Session: Sendable {
        let id: Int32
        let generation: UInt64
        let usesTopicIds: Bool
        /// The epoch the next incremental request must carry.
        var nextEpoch: Int32
        var lastUsedMs: Int64
        /// Session order: partitions that returned records move to the end, so a small `max_bytes`
        /// does not serve the first partitions only.
        var partitions: OrderedDictionary<PartitionRef, CachedPartition>
    }

    let configuration: Configuration
    private(set) var sessions: [Int32: Session] = [:]
    /// Partitions of all sessions.
    private(set) var cachedPartitions = 0
    private var generations: UInt64 = 0

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    var count: Int { sessions.count }

    /// The session with this id.
    func session(_ id: Int32) -> Session? { sessions[id] }

    // MARK: Requests

    /// The first half of a request: checks its session id and epoch, applies an incremental
    /// request's changes to its session, and says what to fetch.
    mutating func begin(_ request: Request, nowMs: Int64) -> Begin {
        let epoch = request.sessionEpoch
        if epoch == Self.initialEpoch || epoch == Self.finalEpoch {
            if request.sessionId != 0 { remove(request.sessionId) }
            let kind: Plan.Kind = epoch == Self.initialEpoch && configuration.slots > 0 ? .creating : .sessionless
            return .fetch(
                Plan(kind: kind, usesTopicIds: request.usesTopicIds, partitions: Self.distinct(request.partitions)))
        }
        guard var session = sessions[request.sessionId] else { return .refused(.fetchSessionIdNotFound) }
        guard session.nextEpoch == epoch else { return .refused(.invalidFetchSessionEpoch) }
        guard session.usesTopicIds == request.usesTopicIds else { return .refused(.fetchSessionTopicIdError) }
        // Forgotten first, then listed: a partition in both starts over, as if newly added.
        for ref in request.forgotten { session.partitions.removeValue(forKey: ref) }
        for (ref, position) in request.partitions {
            if let index = session.partitions.index(forKey: ref) {
                session.partitions.values[index].position = position
            } else {
                session.partitions[ref] = CachedPartition(position: position, reported: nil)
            }
        }
        guard cachedPartitions - (sessions[session.id]?.partitions.count ?? 0) + session.partitions.count <= configuration.maxPartitions else {
            remove(session.id)
            return .refused(.fetchSessionIdNotFound)
        }
        guard !session.partitions.isEmpty else {
            remove(session.id)
            return .fetch(Plan(kind: .sessionless, usesTopicIds: request.usesTopicIds, partitions: []))
        }
        session.nextEpoch = Self.epoch(after: epoch)
        session.lastUsedMs = nowMs
        store(session)
        let planned = session.partitions.elements.map { Planned(ref: $0.key, position: $0.value.position, reported: $0.value.reported) }
        return .fetch(
            Plan(
                kind: .incremental(sessionId: session.id, generation: session.generation), usesTopicIds: request.usesTopicIds,
                partitions: planned))
    }

    /// The second half: given what was found for each planned partition (same order), creates or
    /// updates the session and picks the partitions the answer names. A new session's id comes from
    /// `random` (brokers use the system generator, so a restarted broker does not hand out the ids
    /// its clients still hold).
    mutating func finish(_ plan: Plan, outcomes: [Outcome], nowMs: Int64, using random: inout some RandomNumberGenerator) -> Answer {
        precondition(outcomes.count == plan.partitions.count, "one outcome per planned partition")
        let all = Array(plan.partitions.indices)
        switch plan.kind {
        case .sessionless:
            return Answer(sessionId: 0, include: all)
        case .creating:
            guard !plan.partitions.isEmpty else { return Answer(sessionId: 0, include: all) }
            guard let evicted = victims(size: plan.partitions.count, nowMs: nowMs) else { return Answer(sessionId: 0, include: all) }
            for victim in evicted { remove(victim) }
            var partitions = OrderedDictionary<PartitionRef, CachedPartition>(minimumCapacity: plan.partitions.count)
            for (planned, outcome) in zip(plan.partitions, outcomes) {
                partitions[planned.ref] = CachedPartition(position: planned.position, reported: outcome.reported)
            }
            let id = newSessionId(using: &random)
            generations += 1
            store(
                Session(
                    id: id, generation: generations, usesTopicIds: plan.usesTopicIds,
                    nextEpoch: Self.epoch(after: Self.initialEpoch), lastUsedMs: nowMs, partitions: partitions))
            return Answer(sessionId: id, include: all, evicted: evicted)
        case .incremental(let id, let generation):
            var include: [Int] = []
            for (index, (planned, outcome)) in zip(plan.partitions, outcomes).enumerated()
            where outcome.returnedRecords || outcome.reported == nil || outcome.reported != planned.reported {
                include.append(index)
            }
            // A session evicted or closed meanwhile keeps nothing; the client learns of it on its next request.
            guard var session = sessions[id], session.generation == generation else { return Answer(sessionId: id, include: include) }
            var moved: [(PartitionRef, CachedPartition)] = []
            for (planned, outcome) in zip(plan.partitions, outcomes) {
                guard let index = session.partitions.index(forKey: planned.ref) else { continue }
                session.partitions.values[index].reported = outcome.reported
                if outcome.returnedRecords {
                    moved.append((planned.ref, session.partitions.values[index]))
                }
            }
            if !moved.isEmpty {
                let keys = Set(moved.map(\.0))
                session.partitions.removeAll { keys.contains($0.key) }
                for (ref, cached) in moved { session.partitions[ref] = cached }
            }
            store(session)
            return Answer(sessionId: id, include: include)
        }
    }

    /// The sessions a new one of `size` partitions evicts to fit, in eviction order; nil when it cannot fit.
    func victims(size: Int, nowMs: Int64) -> [Int32]? {
        guard size <= configuration.maxPartitions else { return nil }
        var remaining = sessions
        var partitions = cachedPartitions
        var victims: [Int32] = []
        while remaining.count >= configuration.slots || partitions + size > configuration.maxPartitions {
            guard let victim = Self.evictionCandidate(in: remaining, size: size, nowMs: nowMs, minAgeMs: configuration.minEvictionAgeMs) else {
                return nil
            }
            victims.append(victim.id)
            partitions -= victim.partitions.count
            remaining[victim.id] = nil
        }
        return victims
    }

    /// The session of `sessions` a new one of `size` partitions may evict: the least recently used if it
    /// has been idle for `minAgeMs`, else the smallest if it is smaller than the new one.
    static func evictionCandidate(in sessions: [Int32: Session], size: Int, nowMs: Int64, minAgeMs: Int64) -> Session? {
        // Minimums under total orders, so the answer does not depend on the dictionary's order.
        let idlest = sessions.values.min { ($0.lastUsedMs, $0.id) < ($1.lastUsedMs, $1.id) }
        if let idlest, nowMs - idlest.lastUsedMs >= minAgeMs { return idlest }
        let smallest = sessions.values.min {
            ($0.partitions.count, $0.lastUsedMs, $0.id) < ($1.partitions.count, $1.lastUsedMs, $1.id)
        }
        if let smallest, smallest.partitions.count < size { return smallest }
        return nil
    }

    // MARK: Helpers

    static let initialEpoch: Int32 = 0
    static let finalEpoch: Int32 = -1

    /// Epochs run 1, 2, … Int32.max, then 1 again.
    static func epoch(after epoch: Int32) -> Int32 {
        epoch == Int32.max ? 1 : epoch + 1
    }

    /// Each partition once, where it was first listed, with the position it was last listed with.
    static func distinct(_ partitions: [(ref: PartitionRef, position: Position)]) -> [Planned] {
        var byRef = OrderedDictionary<PartitionRef, Position>(minimumCapacity: partitions.count)
        for (ref, position) in partitions { byRef[ref] = position }
        return byRef.elements.map { Planned(ref: $0.key, position: $0.value, reported: nil) }
    }

    private mutating func store(_ session: Session) {
        cachedPartitions += session.partitions.count - (sessions[session.id]?.partitions.count ?? 0)
        sessions[session.id] = session
    }

    private mutating func remove(_ id: Int32) {
        guard let session = sessions.removeValue(forKey: id) else { return }
        cachedPartitions -= session.partitions.count
    }

    private func newSessionId(using random: inout some RandomNumberGenerator) -> Int32 {
        while true {
            let id = Int32.random(in: 1...Int32.max, using: &random)
            if id != 0, sessions[id] == nil { return id }
        }
    }
}
