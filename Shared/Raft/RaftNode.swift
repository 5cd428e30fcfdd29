import DequeModule

// Longer than the usual 400 lines on purpose: RaftNode is one state machine whose handlers share
// private state (terms, votes, progress, durability barriers) and the invariants the comment below
// states; kept in one file, `private` lets the compiler hold every mutation to this file.

/// One Raft voter as a deterministic state machine: `step(input, now) -> [RaftAction]`.
///
/// No I/O, clocks or system randomness: the driver supplies time, carries out the returned actions
/// in order and reports storage durability back with `.persisted(through:)`. Nothing that depends on
/// unpersisted state is ever sent: votes and term changes wait for the hard state, acknowledgements
/// wait for the log, and a leader counts itself toward commit only for entries it has persisted.
public struct RaftNode: Sendable {
    /// Leader-side replication state of one follower.
    struct Progress: Sendable {
        enum Mode: Sendable, Equatable {
            /// One append at a time until the follower's match point is found.
            case probe
            /// Optimistic pipelined appends within the in-flight window.
            case replicate
            /// Sending the snapshot with this metadata, next chunk at `offset`.
            case snapshot(RaftSnapshotMetadata, offset: UInt64)
        }

        var match: RaftIndex = 0
        var next: RaftIndex
        var mode: Mode = .probe
        var probeSent = false
        /// Last index and byte size of each unacknowledged pipelined append.
        var inflight: Deque<(last: RaftIndex, bytes: Int)> = []
        var inflightBytes = 0
        /// Heard from since the last check-quorum round.
        var recentActive = false

        mutating func acknowledge(through index: RaftIndex) {
            while let first = inflight.first, first.last <= index {
                inflightBytes -= first.bytes
                inflight.removeFirst()
            }
        }

        mutating func becomeProbe(next: RaftIndex) {
            mode = .probe
            self.next = max(next, match + 1)
            probeSent = false
            inflight.removeAll()
            inflightBytes = 0
        }
    }

    /// A storage action not yet reported durable.
    enum PendingWrite: Sendable {
        case hardState(RaftHardState)
        case log(last: RaftIndex)
        case snapshot(RaftSnapshot)
    }

    // MARK: Configuration

    /// This node's configuration.
    public let configuration: RaftConfiguration
    /// This node's id.
    public var id: RaftNodeID { configuration.id }
    private let peers: [RaftNodeID]
    private let quorum: Int
    private let electionMinNanos: UInt64
    private let electionMaxNanos: UInt64
    private let heartbeatNanos: UInt64

    // MARK: Core state

    /// This node's role.
    public private(set) var role: RaftRole = .follower
    /// This node's current term (possibly not yet durable).
    public private(set) var term: RaftTerm
    /// The vote cast in `term`, if any (possibly not yet durable).
    public private(set) var votedFor: RaftNodeID?
    /// The leader known for `term`.
    public private(set) var leaderID: RaftNodeID?
    /// The highest index known committed.
    public private(set) var commitIndex: RaftIndex
    /// The highest index handed to the application with `.apply` (or restored from a snapshot).
    public private(set) var appliedIndex: RaftIndex
    private(set) var log: RaftLog
    /// The latest snapshot, kept so it can be sent to followers that are behind the log start.
    public private(set) var snapshot: RaftSnapshot?
    private var random: RaftRandom

    // MARK: Timers

    private var now: RaftInstant = .zero
    private var electionDeadline: RaftInstant = .zero
    private var heartbeatDue: RaftInstant = .zero
    private var quorumCheckDue: RaftInstant = .zero
    private var lastLeaderContact: RaftInstant?

    // MARK: Durability

    private var nextSequence: RaftStorageSequence = 1
    private var persistedSequence: RaftStorageSequence = 0
    private var pendingWrites: Deque<(sequence: RaftStorageSequence, write: PendingWrite)> = []
    /// The last hard state issued (durable or not), to avoid rewriting an unchanged one.
    private var issuedHardState: RaftHardState
    /// The last hard state known durable.
    public private(set) var persistedHardState: RaftHardState
    /// Entries 1...durableIndex are durable locally (in the log or a snapshot).
    public private(set) var durableIndex: RaftIndex
    /// Messages are held until the hard state issued before them is durable.
    private var hardStateBarrier: RaftStorageSequence = 0
    private var heldMessages: Deque<(barrier: RaftStorageSequence, envelope: RaftEnvelope)> = []

    // MARK: Role-specific state

    private var votesGranted: Set<RaftNodeID> = []
    private var votesRejected: Set<RaftNodeID> = []
    private var campaignIsTransfer = false
    private var progress: [RaftNodeID: Progress] = [:]
    private var transferTarget: RaftNodeID?
    private var transferDeadline: RaftInstant = .zero
    /// Follower: the leader of `term` is known to hold our log through this index.
    private var verifiedIndex: RaftIndex = 0
    private var lastAcknowledged: RaftIndex = 0
    private var incomingSnapshot: RaftSnapshot?
    private var installingSnapshot: RaftSnapshotMetadata?
    private var snapshotRequested = false

    private var actions: [RaftAction] = []

    // MARK: Init

    /// Builds a node from its durable state (a fresh node passes `RaftPersistentState()`).
    ///
    /// `seed` drives the randomized election timeouts; `now` starts the first election timer.
    public init(configuration: RaftConfiguration, restoring state: RaftPersistentState, seed: UInt64, now: RaftInstant) throws(RaftError) {
        let voters = configuration.voters.sorted()
        guard !voters.isEmpty else { throw .invalidConfiguration("no voters") }
        for k in voters.indices.dropFirst() where voters[k] == voters[k - 1] {
            throw .invalidConfiguration("voter \(voters[k]) listed twice")
        }
        guard voters.contains(configuration.id) else { throw .invalidConfiguration("node \(configuration.id) is not a voter") }
        let minNanos = configuration.electionTimeoutMin.raftNanoseconds
        let maxNanos = configuration.electionTimeoutMax.raftNanoseconds
        let heartbeatNanos = configuration.heartbeatInterval.raftNanoseconds
        guard heartbeatNanos > 0, minNanos > heartbeatNanos, maxNanos >= minNanos else {
            throw .invalidConfiguration("need 0 < heartbeat < electionTimeoutMin <= electionTimeoutMax")
        }
        guard configuration.maxEntriesPerMessage > 0, configuration.maxBytesPerMessage > 0,
              configuration.maxInflightMessages > 0, configuration.maxInflightBytes > 0,
              configuration.snapshotChunkBytes > 0, configuration.snapshotThreshold > 0
        else { throw .invalidConfiguration("limits must be positive") }

        var log = RaftLog(startIndex: state.snapshot?.metadata.index ?? 0, startTerm: state.snapshot?.metadata.term ?? 0)
        for entry in state.entries where entry.index > log.startIndex {
            guard entry.index == log.lastIndex + 1 else {
                throw .corruptPersistentState("entry \(entry.index) does not follow \(log.lastIndex)")
            }
            guard entry.term >= log.lastTerm else {
                throw .corruptPersistentState("entry \(entry.index) has term \(entry.term) below \(log.lastTerm)")
            }
            log.append(entry)
        }
        let applied = state.appliedIndex ?? log.startIndex
        guard applied >= log.startIndex, applied <= log.lastIndex else {
            throw .corruptPersistentState("applied index \(applied) outside \(log.startIndex)...\(log.lastIndex)")
        }

        self.configuration = configuration
        peers = voters.filter { $0 != configuration.id }
        quorum = voters.count / 2 + 1
        electionMinNanos = minNanos
        electionMaxNanos = maxNanos
        self.heartbeatNanos = heartbeatNanos
        // A snapshot is made durable outside the hard-state order, so it can carry a newer term than
        // the hard state; the node must never run for a term below its own log.
        if log.lastTerm > state.hardState.term {
            term = log.lastTerm
            votedFor = nil
        } else {
            term = state.hardState.term
            votedFor = state.hardState.votedFor
        }
        commitIndex = applied
        appliedIndex = applied
        self.log = log
        snapshot = state.snapshot
        random = RaftRandom(seed: seed ^ (configuration.id &* 0x9E37_79B9_7F4A_7C15))
        issuedHardState = state.hardState
        persistedHardState = state.hardState
        durableIndex = log.lastIndex
        self.now = now
        resetElectionTimer()
    }

    // MARK: Public read-only view

    /// Role, term, leader and commit index.
    public var status: RaftStatus { RaftStatus(role: role, term: term, leaderID: leaderID, commitIndex: commitIndex) }
    /// The last index in the log.
    public var lastLogIndex: RaftIndex { log.lastIndex }
    /// The term of the last entry in the log.
    public var lastLogTerm: RaftTerm { log.lastTerm }
    /// The index the in-memory log starts after (snapshot or compaction point).
    public var logStartIndex: RaftIndex { log.startIndex }
    /// The entry at `index`, if the in-memory log holds it.
    public func entry(at index: RaftIndex) -> RaftLogEntry? { log.entry(at: index) }
    /// The term of the entry at `index`, if known.
    public func term(at index: RaftIndex) -> RaftTerm? { log.term(at: index) }

    // MARK: Step

    /// Feeds one input at instant `now` and returns what the driver must do, in order.
    public mutating func step(_ input: RaftInput, now: RaftInstant) -> [RaftAction] {
        if now > self.now { self.now = now }
        let before = status
        switch input {
        case .tick:
            tick()
        case let .receive(envelope):
            if envelope.to == id, envelope.from != id, peers.contains(envelope.from) {
                receive(envelope.message, from: envelope.from)
            }
        case let .propose(proposalID, payload):
            propose(id: proposalID, payload: payload)
        case let .persisted(sequence):
            persisted(through: sequence)
        case let .snapshotCreated(index, data):
            snapshotCreated(index: index, data: data)
        case let .transferLeadership(target):
            transferLeadership(to: target)
        }
        let after = status
        if after.role != before.role || after.term != before.term || after.leaderID != before.leaderID {
            actions.append(.statusChanged(after))
        }
        releaseHeldMessages()
        defer { actions = [] }
        return actions
    }

    // MARK: Timers

    private mutating func resetElectionTimer() {
        electionDeadline = now.advanced(byNanoseconds: random.next(in: electionMinNanos, electionMaxNanos))
    }

    private mutating func tick() {
        switch role {
        case .leader:
            if now >= heartbeatDue {
                heartbeatDue = now.advanced(byNanoseconds: heartbeatNanos)
                for peer in peers { sendHeartbeat(to: peer) }
            }
            if transferTarget != nil, now >= transferDeadline { transferTarget = nil }
            if configuration.checkQuorum, now >= quorumCheckDue {
                quorumCheckDue = now.advanced(byNanoseconds: electionMinNanos)
                var active = 1
                for peer in peers {
                    if progress[peer]?.recentActive == true { active += 1 }
                    progress[peer]?.recentActive = false
                }
                if active < quorum { becomeFollower(term: term, leader: nil) }
            }
        case .follower, .preCandidate, .candidate:
            if now >= electionDeadline { campaign(transfer: false) }
        }
    }

    /// The earliest instant at which a tick can act (send heartbeats, check the quorum, give up a
    /// leadership transfer, start an election). A driver may sleep until then instead of ticking
    /// at a fixed rate; `.max` for a leader without peers, whose ticks do nothing.
    public var nextTimerDeadline: RaftInstant {
        switch role {
        case .leader:
            var due = RaftInstant(nanoseconds: .max)
            if !peers.isEmpty {
                due = heartbeatDue
                if configuration.checkQuorum { due = min(due, quorumCheckDue) }
            }
            if transferTarget != nil { due = min(due, transferDeadline) }
            return due
        case .follower, .preCandidate, .candidate:
            return electionDeadline
        }
    }

    private func inLeaderLease() -> Bool {
        if role == .leader { return true }
        guard configuration.checkQuorum, leaderID != nil, let contact = lastLeaderContact else { return false }
        return now < contact.advanced(byNanoseconds: electionMinNanos)
    }

    // MARK: Elections

    private mutating func campaign(transfer: Bool) {
        if configuration.preVote, !transfer {
            becomePreCandidate()
        } else {
            becomeCandidate(transfer: transfer)
        }
    }

    private mutating func becomePreCandidate() {
        role = .preCandidate
        leaderID = nil
        votesGranted = [id]
        votesRejected = []
        resetElectionTimer()
        let request = RaftVoteRequest(term: term + 1, lastLogIndex: log.lastIndex, lastLogTerm: log.lastTerm, isPreVote: true)
        for peer in peers { send(.vote(request), to: peer) }
        evaluateElection()
    }

    private mutating func becomeCandidate(transfer: Bool) {
        role = .candidate
        term += 1
        votedFor = id
        leaderID = nil
        verifiedIndex = 0
        lastAcknowledged = 0
        campaignIsTransfer = transfer
        persistHardState()
        votesGranted = []
        votesRejected = []
        resetElectionTimer()
        let request = RaftVoteRequest(
            term: term, lastLogIndex: log.lastIndex, lastLogTerm: log.lastTerm, isPreVote: false, isLeadershipTransfer: transfer)
        for peer in peers { send(.vote(request), to: peer) }
        evaluateElection()
    }

    /// Counts votes; the candidate's own vote counts only once it is durable.
    private mutating func evaluateElection() {
        switch role {
        case .preCandidate:
            if votesGranted.count >= quorum {
                becomeCandidate(transfer: false)
            } else if votesRejected.count >= quorum {
                becomeFollower(term: term, leader: nil)
            }
        case .candidate:
            let selfVote = persistedHardState.term == term && persistedHardState.votedFor == id ? 1 : 0
            if votesGranted.count + selfVote >= quorum {
                becomeLeader()
            } else if votesRejected.count >= quorum {
                becomeFollower(term: term, leader: nil)
            }
        case .follower, .leader:
            break
        }
    }

    private mutating func becomeFollower(term newTerm: RaftTerm, leader: RaftNodeID?) {
        if newTerm > term {
            term = newTerm
            votedFor = nil
            verifiedIndex = 0
            lastAcknowledged = 0
            persistHardState()
        }
        role = .follower
        leaderID = leader
        progress = [:]
        transferTarget = nil
        votesGranted = []
        votesRejected = []
        resetElectionTimer()
    }

    private mutating func becomeLeader() {
        role = .leader
        leaderID = id
        transferTarget = nil
        progress = [:]
        for peer in peers { progress[peer] = Progress(next: log.lastIndex + 1) }
        heartbeatDue = now.advanced(byNanoseconds: heartbeatNanos)
        quorumCheckDue = now.advanced(byNanoseconds: electionMinNanos)
        // Entries of earlier terms commit only through an entry of the leader's own term.
        appendLocal([RaftLogEntry(term: term, index: log.lastIndex + 1, kind: .noop, payload: [])])
        maybeCommit()
    }

    private func candidateIsUpToDate(_ request: RaftVoteRequest) -> Bool {
        request.lastLogTerm > log.lastTerm || (request.lastLogTerm == log.lastTerm && request.lastLogIndex >= log.lastIndex)
    }

    private mutating func handleVote(_ request: RaftVoteRequest, from candidate: RaftNodeID) {
        if request.isPreVote {
            let granted = request.term > term && candidateIsUpToDate(request) && !inLeaderLease()
            send(.voteResponse(RaftVoteResponse(term: granted ? request.term : term, granted: granted, isPreVote: true)), to: candidate)
            return
        }
        if request.term > term {
            // A healthy leader's followers ignore disruptive candidates unless the leader asked for it.
            if inLeaderLease(), !request.isLeadershipTransfer { return }
            becomeFollower(term: request.term, leader: nil)
        }
        let granted = request.term == term && (votedFor == nil || votedFor == candidate) && candidateIsUpToDate(request)
        if granted {
            votedFor = candidate
            persistHardState()
            resetElectionTimer()
        }
        // Held until the vote (and term) are durable.
        send(.voteResponse(RaftVoteResponse(term: term, granted: granted, isPreVote: false)), to: candidate)
    }

    private mutating func handleVoteResponse(_ response: RaftVoteResponse, from voter: RaftNodeID) {
        if response.isPreVote {
            guard role == .preCandidate else { return }
            if response.granted, response.term == term + 1 {
                votesGranted.insert(voter)
            } else if !response.granted {
                if response.term > term {
                    becomeFollower(term: response.term, leader: nil)
                    return
                }
                votesRejected.insert(voter)
            }
        } else {
            if response.term > term {
                becomeFollower(term: response.term, leader: nil)
                return
            }
            guard role == .candidate, response.term == term else { return }
            if response.granted { votesGranted.insert(voter) } else { votesRejected.insert(voter) }
        }
        evaluateElection()
    }

    // MARK: Messages

    private mutating func receive(_ message: RaftMessage, from peer: RaftNodeID) {
        // No legitimate cluster gets near this; refusing it keeps `term + 1` from overflowing.
        guard message.term < RaftTerm.max / 2 else { return }
        switch message {
        case let .vote(request):
            handleVote(request, from: peer)
            return
        case let .voteResponse(response):
            handleVoteResponse(response, from: peer)
            return
        default:
            break
        }
        let messageTerm = message.term
        if messageTerm < term {
            // A stale leader learns the newer term and steps down; stale responses are dropped.
            switch message {
            case .append:
                send(.appendResponse(RaftAppendResponse(term: term, success: false, matchIndex: 0)), to: peer)
            case let .snapshot(request):
                send(.snapshotResponse(RaftSnapshotResponse(term: term, metadata: request.metadata, nextOffset: 0, installed: false, matchIndex: 0)), to: peer)
            default:
                break
            }
            return
        }
        switch message {
        case let .append(request):
            acceptLeader(peer, term: messageTerm)
            handleAppend(request, from: peer)
        case let .snapshot(request):
            acceptLeader(peer, term: messageTerm)
            handleSnapshot(request, from: peer)
        case .timeoutNow:
            acceptLeader(peer, term: messageTerm)
            if role == .follower { campaign(transfer: true) }
        case let .appendResponse(response):
            if messageTerm > term {
                becomeFollower(term: messageTerm, leader: nil)
            } else if role == .leader {
                handleAppendResponse(response, from: peer)
            }
        case let .snapshotResponse(response):
            if messageTerm > term {
                becomeFollower(term: messageTerm, leader: nil)
            } else if role == .leader {
                handleSnapshotResponse(response, from: peer)
            }
        case .vote, .voteResponse:
            break
        }
    }

    /// A message from the leader of `leaderTerm` (>= our term) arrived.
    private mutating func acceptLeader(_ leader: RaftNodeID, term leaderTerm: RaftTerm) {
        if leaderTerm > term || role != .follower || leaderID != leader {
            becomeFollower(term: leaderTerm, leader: leader)
        } else {
            resetElectionTimer()
        }
        lastLeaderContact = now
    }

    private var acknowledgeableIndex: RaftIndex { min(verifiedIndex, durableIndex) }

    private mutating func handleAppend(_ request: RaftAppendRequest, from leader: RaftNodeID) {
        if installingSnapshot != nil {
            send(.appendResponse(RaftAppendResponse(term: term, success: true, matchIndex: acknowledgeableIndex)), to: leader)
            return
        }
        var prevIndex = request.prevLogIndex
        var prevTerm = request.prevLogTerm
        var entries = request.entries[...]
        // Entries at or below our compaction point are committed, hence identical to the leader's.
        if prevIndex < log.startIndex {
            entries = entries.drop { $0.index <= log.startIndex }
            prevIndex = log.startIndex
            prevTerm = log.startTerm
        }
        guard prevIndex <= log.lastIndex else {
            send(.appendResponse(RaftAppendResponse(
                term: term, success: false, matchIndex: 0, rejectedIndex: request.prevLogIndex,
                conflictTerm: nil, conflictIndex: log.lastIndex + 1)), to: leader)
            return
        }
        if let localTerm = log.term(at: prevIndex), localTerm != prevTerm {
            let conflictIndex = prevIndex > log.startIndex ? log.firstIndex(ofTermAt: prevIndex) : log.startIndex + 1
            send(.appendResponse(RaftAppendResponse(
                term: term, success: false, matchIndex: 0, rejectedIndex: request.prevLogIndex,
                conflictTerm: localTerm, conflictIndex: max(conflictIndex, commitIndex + 1))), to: leader)
            return
        }
        // Validate the batch before touching the log: consecutive indexes, non-decreasing terms.
        var expected = prevIndex + 1
        var lastTerm = prevTerm
        for entry in entries {
            guard entry.index == expected, entry.term >= lastTerm, entry.term <= request.term else { return }
            expected += 1
            lastTerm = entry.term
        }
        var newEntries: [RaftLogEntry] = []
        for entry in entries {
            if newEntries.isEmpty, let localTerm = log.term(at: entry.index) {
                if localTerm == entry.term { continue }
                // Committed entries never conflict with the legitimate leader; refuse rather than lose them.
                guard entry.index > commitIndex else { return }
                truncateLog(from: entry.index)
            }
            newEntries.append(entry)
        }
        if !newEntries.isEmpty {
            for entry in newEntries { log.append(entry) }
            writeLog(newEntries)
        }
        let messageLast = prevIndex + RaftIndex(entries.count)
        verifiedIndex = max(verifiedIndex, messageLast)
        let newCommit = min(request.leaderCommit, verifiedIndex)
        if newCommit > commitIndex {
            commitIndex = newCommit
            applyCommitted()
        }
        // Entries not yet durable are acknowledged when `.persisted` arrives.
        if entries.isEmpty || acknowledgeableIndex >= messageLast {
            acknowledge(force: true)
        }
    }

    private mutating func acknowledge(force: Bool) {
        guard role == .follower, let leader = leaderID, installingSnapshot == nil else { return }
        let index = acknowledgeableIndex
        guard force || index > lastAcknowledged else { return }
        lastAcknowledged = max(lastAcknowledged, index)
        send(.appendResponse(RaftAppendResponse(term: term, success: true, matchIndex: index)), to: leader)
    }

    private mutating func handleSnapshot(_ request: RaftSnapshotRequest, from leader: RaftNodeID) {
        let meta = request.metadata
        func respond(_ node: inout RaftNode, nextOffset: UInt64, installed: Bool) {
            node.send(.snapshotResponse(RaftSnapshotResponse(
                term: node.term, metadata: meta, nextOffset: nextOffset, installed: installed,
                matchIndex: installed ? node.acknowledgeableIndex : 0)), to: leader)
        }
        if installingSnapshot != nil { return }
        if meta.index <= commitIndex {
            // Already have it; report what is durable and let the leader probe from there.
            verifiedIndex = max(verifiedIndex, min(commitIndex, log.lastIndex))
            respond(&self, nextOffset: 0, installed: true)
            return
        }
        if request.offset == 0 {
            incomingSnapshot = RaftSnapshot(metadata: meta, data: [])
        }
        guard var incoming = incomingSnapshot, incoming.metadata == meta, request.offset == UInt64(incoming.data.count) else {
            let resume = incomingSnapshot?.metadata == meta ? UInt64(incomingSnapshot?.data.count ?? 0) : 0
            respond(&self, nextOffset: resume, installed: false)
            return
        }
        guard incoming.data.count + request.data.count <= configuration.maxSnapshotBytes else {
            incomingSnapshot = nil
            respond(&self, nextOffset: 0, installed: false)
            return
        }
        incomingSnapshot = nil
        incoming.data.append(contentsOf: request.data)
        if request.done {
            installingSnapshot = meta
            let sequence = takeSequence()
            pendingWrites.append((sequence, .snapshot(incoming)))
            actions.append(.installSnapshot(incoming, sequence: sequence))
        } else {
            let offset = UInt64(incoming.data.count)
            incomingSnapshot = incoming
            respond(&self, nextOffset: offset, installed: false)
        }
    }

    private mutating func finishInstall(_ installed: RaftSnapshot) {
        let meta = installed.metadata
        installingSnapshot = nil
        if log.term(at: meta.index) == meta.term {
            log.compact(through: meta.index)
        } else {
            log.reset(startIndex: meta.index, startTerm: meta.term)
            durableIndex = min(durableIndex, meta.index)
            for k in pendingWrites.indices {
                if case let .log(last) = pendingWrites[k].write, last > meta.index { pendingWrites[k].write = .log(last: meta.index) }
            }
        }
        durableIndex = max(durableIndex, meta.index)
        snapshot = installed
        snapshotRequested = false
        commitIndex = max(commitIndex, meta.index)
        appliedIndex = max(appliedIndex, meta.index)
        if leaderID != nil { verifiedIndex = max(verifiedIndex, meta.index) }
        if role == .follower, let leader = leaderID {
            lastAcknowledged = max(lastAcknowledged, acknowledgeableIndex)
            send(.snapshotResponse(RaftSnapshotResponse(
                term: term, metadata: meta, nextOffset: UInt64(installed.data.count), installed: true,
                matchIndex: acknowledgeableIndex)), to: leader)
        }
        applyCommitted()
    }

    // MARK: Leader replication

    private mutating func propose(id proposalID: UInt64, payload: [UInt8]) {
        guard role == .leader else {
            actions.append(.proposalRejected(id: proposalID, .notLeader(leaderHint: leaderID)))
            return
        }
        if let target = transferTarget {
            actions.append(.proposalRejected(id: proposalID, .transferringLeadership(to: target)))
            return
        }
        let entry = RaftLogEntry(term: term, index: log.lastIndex + 1, kind: .command, payload: payload)
        appendLocal([entry])
        actions.append(.proposalAccepted(id: proposalID, index: entry.index, term: term))
    }

    private mutating func appendLocal(_ entries: [RaftLogEntry]) {
        for entry in entries { log.append(entry) }
        writeLog(entries)
        for peer in peers { sendAppends(to: peer) }
    }

    /// Sends as many appends as the follower's mode and window allow.
    private mutating func sendAppends(to peer: RaftNodeID) {
        var budget = configuration.maxInflightMessages + 1
        while budget > 0, sendAppend(to: peer, heartbeat: false) { budget -= 1 }
    }

    private mutating func sendHeartbeat(to peer: RaftNodeID) {
        guard var pr = progress[peer] else { return }
        switch pr.mode {
        case .snapshot:
            sendSnapshotChunk(to: peer)
        case .probe:
            pr.probeSent = false
            progress[peer] = pr
            _ = sendAppend(to: peer, heartbeat: true)
        case .replicate:
            _ = sendAppend(to: peer, heartbeat: true)
        }
    }

    /// Sends one append; a heartbeat is sent even when there is nothing new or the window is full.
    @discardableResult
    private mutating func sendAppend(to peer: RaftNodeID, heartbeat: Bool) -> Bool {
        guard var pr = progress[peer] else { return false }
        if case .snapshot = pr.mode { return false }
        if pr.mode == .probe, pr.probeSent, !heartbeat { return false }
        let prevIndex = pr.next - 1
        guard let prevTerm = log.term(at: prevIndex) else {
            startSnapshot(to: peer)
            return false
        }
        var entries: [RaftLogEntry] = []
        if !heartbeat || pr.mode == .probe {
            let windowFull = pr.mode == .replicate
                && (pr.inflight.count >= configuration.maxInflightMessages || pr.inflightBytes >= configuration.maxInflightBytes)
            if !windowFull {
                let byteBudget = pr.mode == .replicate
                    ? min(configuration.maxBytesPerMessage, configuration.maxInflightBytes - pr.inflightBytes)
                    : configuration.maxBytesPerMessage
                entries = log.slice(from: pr.next, through: log.lastIndex, maxCount: configuration.maxEntriesPerMessage, maxBytes: byteBudget)
            }
            if entries.isEmpty, !heartbeat { return false }
        }
        send(.append(RaftAppendRequest(term: term, prevLogIndex: prevIndex, prevLogTerm: prevTerm, entries: entries, leaderCommit: commitIndex)), to: peer)
        switch pr.mode {
        case .probe:
            pr.probeSent = true
        case .replicate:
            if let last = entries.last {
                let bytes = entries.reduce(0) { $0 + $1.accountedBytes }
                pr.inflight.append((last.index, bytes))
                pr.inflightBytes += bytes
                pr.next = last.index + 1
            }
        case .snapshot:
            break
        }
        progress[peer] = pr
        return !entries.isEmpty && pr.mode == .replicate
    }

    private mutating func startSnapshot(to peer: RaftNodeID) {
        guard let snapshot, var pr = progress[peer] else { return }
        pr.mode = .snapshot(snapshot.metadata, offset: 0)
        pr.inflight.removeAll()
        pr.inflightBytes = 0
        progress[peer] = pr
        sendSnapshotChunk(to: peer)
    }

    private mutating func sendSnapshotChunk(to peer: RaftNodeID) {
        guard let snapshot, var pr = progress[peer], case let .snapshot(meta, offset) = pr.mode else { return }
        var start = offset
        if meta != snapshot.metadata {
            // A newer local snapshot replaced the one being sent; restart with it.
            start = 0
            pr.mode = .snapshot(snapshot.metadata, offset: 0)
            progress[peer] = pr
        }
        let total = UInt64(snapshot.data.count)
        let from = Int(min(start, total))
        let to = min(snapshot.data.count, from + configuration.snapshotChunkBytes)
        send(.snapshot(RaftSnapshotRequest(
            term: term, metadata: snapshot.metadata, offset: UInt64(from), data: Array(snapshot.data[from..<to]),
            done: to == snapshot.data.count)), to: peer)
    }

    private mutating func handleSnapshotResponse(_ response: RaftSnapshotResponse, from peer: RaftNodeID) {
        guard var pr = progress[peer] else { return }
        pr.recentActive = true
        guard case let .snapshot(meta, _) = pr.mode, meta == response.metadata else {
            progress[peer] = pr
            return
        }
        if response.installed {
            pr.match = max(pr.match, min(response.matchIndex, log.lastIndex))
            pr.becomeProbe(next: pr.match + 1)
            progress[peer] = pr
            maybeCommit()
            sendAppends(to: peer)
        } else {
            pr.mode = .snapshot(meta, offset: response.nextOffset)
            progress[peer] = pr
            sendSnapshotChunk(to: peer)
        }
    }

    private mutating func handleAppendResponse(_ response: RaftAppendResponse, from peer: RaftNodeID) {
        guard var pr = progress[peer] else { return }
        pr.recentActive = true
        if response.success {
            if response.matchIndex > log.lastIndex {
                progress[peer] = pr
                return
            }
            if response.matchIndex > pr.match {
                pr.match = response.matchIndex
            }
            pr.acknowledge(through: pr.match)
            switch pr.mode {
            case .probe:
                pr.mode = .replicate
                pr.probeSent = false
                pr.inflight.removeAll()
                pr.inflightBytes = 0
                pr.next = pr.match + 1
            case .replicate:
                pr.next = max(pr.next, pr.match + 1)
            case let .snapshot(meta, _):
                if pr.match >= meta.index { pr.becomeProbe(next: pr.match + 1) }
            }
            progress[peer] = pr
            maybeCommit()
            if role == .leader {
                sendAppends(to: peer)
                if transferTarget == peer, pr.match == log.lastIndex { send(.timeoutNow(term: term), to: peer) }
            }
            return
        }
        // A rejection only matters if it answers the append we are waiting on.
        let stale: Bool = switch pr.mode {
        case .probe: response.rejectedIndex != pr.next - 1
        case .replicate: response.rejectedIndex <= pr.match || response.rejectedIndex >= pr.next
        case .snapshot: true
        }
        guard !stale, response.rejectedIndex > 0 else {
            progress[peer] = pr
            return
        }
        var next = response.conflictIndex
        if let conflictTerm = response.conflictTerm,
           let last = log.lastIndex(ofTerm: conflictTerm, atOrBefore: response.rejectedIndex) {
            next = last + 1
        }
        next = min(max(next, 1), response.rejectedIndex, log.lastIndex + 1)
        pr.becomeProbe(next: next)
        progress[peer] = pr
        sendAppends(to: peer)
    }

    private mutating func maybeCommit() {
        guard role == .leader else { return }
        var matches = [durableIndex]
        for peer in peers { matches.append(progress[peer]?.match ?? 0) }
        matches.sort(by: >)
        let candidate = matches[quorum - 1]
        // Only entries of the current term are committed by counting (Raft §5.4.2).
        guard candidate > commitIndex, log.term(at: candidate) == term else { return }
        commitIndex = candidate
        applyCommitted()
    }

    private mutating func transferLeadership(to requested: RaftNodeID?) {
        guard role == .leader, !peers.isEmpty else { return }
        var target = requested
        if target == nil {
            var best: (RaftNodeID, RaftIndex)?
            for peer in peers {
                let match = progress[peer]?.match ?? 0
                if best == nil || match > best!.1 { best = (peer, match) }
            }
            target = best?.0
        }
        guard let target, peers.contains(target) else { return }
        transferTarget = target
        transferDeadline = now.advanced(byNanoseconds: electionMaxNanos)
        if progress[target]?.match == log.lastIndex {
            send(.timeoutNow(term: term), to: target)
        } else {
            sendAppends(to: target)
        }
    }

    // MARK: Applying and snapshots

    private mutating func applyCommitted() {
        guard installingSnapshot == nil else { return }
        let upTo = min(commitIndex, log.lastIndex)
        guard upTo > appliedIndex else { return }
        let entries = log.slice(from: appliedIndex + 1, through: upTo)
        guard !entries.isEmpty else { return }
        appliedIndex = entries[entries.count - 1].index
        actions.append(.apply(entries))
        let sinceSnapshot = appliedIndex - (snapshot?.metadata.index ?? 0)
        if !snapshotRequested, sinceSnapshot >= configuration.snapshotThreshold {
            snapshotRequested = true
            actions.append(.takeSnapshot(throughIndex: appliedIndex))
        }
    }

    private mutating func snapshotCreated(index: RaftIndex, data: [UInt8]) {
        snapshotRequested = false
        guard installingSnapshot == nil, index > (snapshot?.metadata.index ?? 0), index <= appliedIndex,
              let entryTerm = log.term(at: index)
        else { return }
        snapshot = RaftSnapshot(metadata: RaftSnapshotMetadata(index: index, term: entryTerm), data: data)
        durableIndex = max(durableIndex, index)
        let compactThrough = index > configuration.entriesKeptAfterSnapshot ? index - configuration.entriesKeptAfterSnapshot : 0
        if compactThrough > log.startIndex {
            log.compact(through: compactThrough)
            actions.append(.compactLog(through: compactThrough))
        }
    }

    // MARK: Durability

    private mutating func takeSequence() -> RaftStorageSequence {
        defer { nextSequence += 1 }
        return nextSequence
    }

    private mutating func persistHardState() {
        let state = RaftHardState(term: term, votedFor: votedFor)
        guard state != issuedHardState else { return }
        issuedHardState = state
        let sequence = takeSequence()
        pendingWrites.append((sequence, .hardState(state)))
        hardStateBarrier = sequence
        actions.append(.persistHardState(state, sequence: sequence))
    }

    private mutating func writeLog(_ entries: [RaftLogEntry]) {
        guard let last = entries.last else { return }
        let sequence = takeSequence()
        pendingWrites.append((sequence, .log(last: last.index)))
        actions.append(.appendLog(entries, sequence: sequence))
    }

    /// Drops entries from `index` on, and forgets any durability claimed for them.
    private mutating func truncateLog(from index: RaftIndex) {
        log.truncate(from: index)
        durableIndex = min(durableIndex, index - 1)
        for k in pendingWrites.indices {
            if case let .log(last) = pendingWrites[k].write, last >= index { pendingWrites[k].write = .log(last: index - 1) }
        }
    }

    private mutating func persisted(through sequence: RaftStorageSequence) {
        guard sequence > persistedSequence, sequence < nextSequence else { return }
        persistedSequence = sequence
        var installed: RaftSnapshot?
        while let first = pendingWrites.first, first.sequence <= sequence {
            pendingWrites.removeFirst()
            switch first.write {
            case let .hardState(state): persistedHardState = state
            case let .log(last): durableIndex = max(durableIndex, min(last, log.lastIndex))
            case let .snapshot(snapshot): installed = snapshot
            }
        }
        if let installed { finishInstall(installed) }
        switch role {
        case .leader: maybeCommit()
        case .candidate: evaluateElection()
        case .follower: acknowledge(force: false)
        case .preCandidate: break
        }
    }

    private mutating func send(_ message: RaftMessage, to peer: RaftNodeID) {
        let envelope = RaftEnvelope(from: id, to: peer, message: message)
        if hardStateBarrier > persistedSequence || !heldMessages.isEmpty {
            heldMessages.append((hardStateBarrier, envelope))
        } else {
            actions.append(.send(envelope))
        }
    }

    private mutating func releaseHeldMessages() {
        while let first = heldMessages.first, first.barrier <= persistedSequence {
            heldMessages.removeFirst()
            actions.append(.send(first.envelope))
        }
    }
}
