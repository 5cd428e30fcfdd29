import Testing
@testable import Raft

private func sends(_ actions: [RaftAction]) -> [RaftEnvelope] {
    actions.compactMap { if case let .send(envelope) = $0 { envelope } else { nil } }
}

private func applied(_ actions: [RaftAction]) -> [RaftLogEntry] {
    actions.flatMap { action -> [RaftLogEntry] in if case let .apply(entries) = action { entries } else { [] } }
}

@Suite struct RaftNodeTests {
    @Test func singleNodeElectsItselfOnlyAfterPersistingAndCommitsAlone() throws {
        var cluster = try ManualCluster(count: 1)
        cluster.advance(milliseconds: 250)
        let campaign = cluster.step(1, .tick)
        #expect(campaign.contains { if case .persistHardState(RaftHardState(term: 1, votedFor: 1), _) = $0 { true } else { false } })
        // Its own vote is not durable yet, so it must not lead.
        #expect(cluster.node(1).role == .candidate)

        let elected = cluster.persist(1)
        #expect(cluster.node(1).role == .leader)
        #expect(elected.contains { if case let .statusChanged(status) = $0 { status.role == .leader && status.term == 1 } else { false } })
        // The no-op is appended but not committed before it is durable.
        #expect(cluster.node(1).commitIndex == 0)
        cluster.persist(1)
        #expect(cluster.node(1).commitIndex == 1)
        #expect(cluster.applied[0].map(\.kind) == [.noop])

        let answer = cluster.step(1, .propose(id: 7, payload: [1, 2, 3]))
        #expect(answer.contains { if case .proposalAccepted(id: 7, index: 2, term: 1) = $0 { true } else { false } })
        #expect(cluster.node(1).commitIndex == 1)
        cluster.persist(1)
        #expect(cluster.node(1).commitIndex == 2)
        #expect(cluster.applied[0].last?.payload == [1, 2, 3])
    }

    @Test func nextTimerDeadlineSaysWhenATickCanAct() throws {
        var cluster = try ManualCluster(count: 3)
        let ids: [RaftNodeID] = [1, 2, 3]
        // A follower's next timer is its election deadline, within the configured timeout.
        let election = cluster.node(1).nextTimerDeadline
        #expect(election > cluster.now && election <= cluster.now.advanced(byNanoseconds: 200_000_000))
        let elected = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(elected)
        let leader = try #require(cluster.leader(among: ids))
        // Ticking the leader up to its heartbeat deadline sends nothing; at the deadline it sends heartbeats.
        let due = cluster.node(leader).nextTimerDeadline
        #expect(due <= cluster.now.advanced(byNanoseconds: 20_000_000))
        while cluster.now.advanced(byNanoseconds: 1_000_000) < due {
            cluster.advance(milliseconds: 1)
            #expect(sends(cluster.step(leader, .tick)).isEmpty)
        }
        cluster.now = due
        #expect(sends(cluster.step(leader, .tick)).count == 2)
        #expect(cluster.node(leader).nextTimerDeadline > due)

        // A leader without peers has nothing to time.
        var single = try ManualCluster(count: 1)
        single.advance(milliseconds: 250)
        single.step(1, .tick)
        single.persist(1)
        #expect(single.node(1).role == .leader)
        #expect(single.node(1).nextTimerDeadline == RaftInstant(nanoseconds: .max))
    }

    @Test func voteIsSentOnlyAfterHardStateIsPersisted() throws {
        var cluster = try ManualCluster(count: 3)
        cluster.advance(milliseconds: 250)
        cluster.step(1, .tick)
        cluster.settle(allow: { $0.to == 1 || $0.from == 1 })  // pre-votes granted, node 1 becomes candidate
        #expect(cluster.node(1).role == .candidate || cluster.node(1).role == .leader)

        // Hand-deliver a real vote request to a fresh node: the grant must wait for its hard state.
        var voter = try ManualCluster(count: 3)
        let request = RaftEnvelope(from: 1, to: 2, message: .vote(RaftVoteRequest(term: 1, lastLogIndex: 0, lastLogTerm: 0, isPreVote: false)))
        let first = voter.step(2, .receive(request))
        #expect(sends(first).isEmpty)
        #expect(first.contains { if case .persistHardState(RaftHardState(term: 1, votedFor: 1), _) = $0 { true } else { false } })
        let afterPersist = voter.persist(2)
        let grants = sends(afterPersist)
        #expect(grants.count == 1)
        #expect(grants.first?.message == .voteResponse(RaftVoteResponse(term: 1, granted: true, isPreVote: false)))
    }

    @Test func followerAcknowledgesAppendOnlyAfterPersisting() throws {
        var cluster = try ManualCluster(count: 3)
        let entry = RaftLogEntry(term: 1, index: 1, payload: [9])
        let append = RaftEnvelope(from: 1, to: 2, message: .append(RaftAppendRequest(term: 1, prevLogIndex: 0, prevLogTerm: 0, entries: [entry], leaderCommit: 0)))
        let first = cluster.step(2, .receive(append))
        // The term change must be durable before any answer, and the entry before it is acknowledged.
        #expect(sends(first).isEmpty)
        let acks = sends(cluster.persist(2))
        #expect(acks.map(\.message) == [.appendResponse(RaftAppendResponse(term: 1, success: true, matchIndex: 1))])
    }

    @Test func threeNodesElectReplicateAndCommit() throws {
        var cluster = try ManualCluster(count: 3)
        let ids: [RaftNodeID] = [1, 2, 3]
        let reached1 = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(reached1)
        let leader = try #require(cluster.leader(among: ids))
        for k in 0..<20 { cluster.step(leader, .propose(id: UInt64(k), payload: [UInt8(k)])) }
        let reached2 = cluster.run(milliseconds: 1_000, ticking: ids, until: { c in c.applied.allSatisfy { $0.count == 21 } })
        #expect(reached2)
        #expect(cluster.applied[0] == cluster.applied[1] && cluster.applied[1] == cluster.applied[2])
        let other = ids.first { $0 != leader }!
        let rejected = cluster.step(other, .propose(id: 99, payload: [1]))
        #expect(rejected.contains { if case .proposalRejected(id: 99, .notLeader(leaderHint: leader)) = $0 { true } else { false } })
    }

    @Test func preVoteKeepsPartitionedNodeFromDisruptingHealthyLeader() throws {
        var cluster = try ManualCluster(count: 3)
        let ids: [RaftNodeID] = [1, 2, 3]
        let reached3 = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(reached3)
        let leader = try #require(cluster.leader(among: ids))
        let isolated = ids.first { $0 != leader }!
        let term = cluster.node(leader).term

        // Many election timeouts alone: pre-votes fail, so its term never moves.
        cluster.run(milliseconds: 3_000, ticking: ids, allow: { $0.from != isolated && $0.to != isolated })
        #expect(cluster.node(isolated).term == term)
        #expect(cluster.node(leader).role == .leader)

        // Rejoining does not depose the healthy leader either.
        cluster.run(milliseconds: 1_000, ticking: ids)
        #expect(cluster.node(leader).role == .leader)
        #expect(cluster.node(leader).term == term)
        #expect(cluster.node(isolated).leaderID == leader)
    }

    @Test func withoutPreVoteTheRejoiningNodeWouldBumpTheTerm() throws {
        var cluster = try ManualCluster(count: 3) { $0.preVote = false }
        let ids: [RaftNodeID] = [1, 2, 3]
        let reached4 = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(reached4)
        let leader = try #require(cluster.leader(among: ids))
        let isolated = ids.first { $0 != leader }!
        let term = cluster.node(leader).term
        cluster.run(milliseconds: 1_000, ticking: ids, allow: { $0.from != isolated && $0.to != isolated })
        #expect(cluster.node(isolated).term > term)
    }

    @Test func leaderThatLosesQuorumStepsDown() throws {
        var cluster = try ManualCluster(count: 3)
        let ids: [RaftNodeID] = [1, 2, 3]
        let reached5 = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(reached5)
        let leader = try #require(cluster.leader(among: ids))
        let term = cluster.node(leader).term
        // Only the leader ticks, and nothing reaches it: within two election timeouts it must step down.
        let steppedDown = cluster.run(milliseconds: 250, ticking: [leader], allow: { _ in false }, until: { $0.node(leader).role != .leader })
        #expect(steppedDown)
        #expect(cluster.node(leader).term == term)
        #expect(cluster.node(leader).leaderID == nil)
    }

    @Test func conflictingFollowerLogIsRepairedWithFewRoundTrips() throws {
        var cluster = try ManualCluster(count: 3) { $0.maxEntriesPerMessage = 4 }
        // Node 3 holds 30 uncommitted entries of an old term 2; nodes 1 and 2 moved on in term 3.
        var stale: [RaftLogEntry] = [RaftLogEntry(term: 1, index: 1, payload: [0])]
        for i in 2...31 { stale.append(RaftLogEntry(term: 2, index: RaftIndex(i), payload: [2])) }
        var good: [RaftLogEntry] = [RaftLogEntry(term: 1, index: 1, payload: [0])]
        for i in 2...6 { good.append(RaftLogEntry(term: 3, index: RaftIndex(i), payload: [3])) }
        try cluster.restore(3, RaftPersistentState(hardState: RaftHardState(term: 2), entries: stale))
        try cluster.restore(1, RaftPersistentState(hardState: RaftHardState(term: 3), entries: good))
        try cluster.restore(2, RaftPersistentState(hardState: RaftHardState(term: 3), entries: good))
        let ids: [RaftNodeID] = [1, 2, 3]
        var rejections = 0
        let repaired = cluster.run(milliseconds: 3_000, ticking: [1, 2], allow: { envelope in
            if case let .appendResponse(response) = envelope.message, !response.success, envelope.from == 3 { rejections += 1 }
            return true
        }, until: { c in
            guard let leader = c.leader(among: [1, 2]) else { return false }
            return c.node(3).lastLogIndex == c.node(leader).lastLogIndex && c.node(3).commitIndex == c.node(leader).lastLogIndex
        })
        #expect(repaired)
        let leader = try #require(cluster.leader(among: ids))
        for i in 1...cluster.node(leader).lastLogIndex {
            #expect(cluster.node(3).entry(at: i) == cluster.node(leader).entry(at: i))
        }
        // The conflict-term hint skips the whole stale term at once instead of one index per round trip.
        #expect(rejections <= 3)
    }

    @Test func laggingFollowerReceivesChunkedSnapshot() throws {
        var cluster = try ManualCluster(count: 3) {
            $0.snapshotThreshold = 10
            $0.entriesKeptAfterSnapshot = 2
            $0.snapshotChunkBytes = 32
        }
        let ids: [RaftNodeID] = [1, 2, 3]
        let reached6 = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(reached6)
        let leader = try #require(cluster.leader(among: ids))
        let lagging = ids.first { $0 != leader }!
        let cutOff: (RaftEnvelope) -> Bool = { $0.from != lagging && $0.to != lagging }
        for k in 0..<40 {
            cluster.step(leader, .propose(id: UInt64(k), payload: [UInt8(k), 0, 0, 0, 0, 0, 0, 0]))
            cluster.settle(allow: cutOff)
        }
        #expect(cluster.node(leader).logStartIndex > cluster.node(lagging).lastLogIndex)

        var chunks = 0
        var installs = 0
        let caughtUp = cluster.run(milliseconds: 2_000, ticking: ids, allow: { envelope in
            if case .snapshot = envelope.message { chunks += 1 }
            return true
        }, until: { c in
            if c.lastActions[Int(lagging - 1)].contains(where: { if case .installSnapshot = $0 { true } else { false } }) { installs += 1 }
            return c.node(lagging).commitIndex == c.node(leader).lastLogIndex && c.applied[Int(lagging - 1)].count == c.applied[Int(leader - 1)].count
        })
        #expect(caughtUp)
        #expect(chunks > 1)
        #expect(cluster.node(lagging).logStartIndex >= 10)
        #expect(cluster.applied[Int(lagging - 1)] == cluster.applied[Int(leader - 1)])
    }

    @Test func restartRebuildsFromDurableStateAndRejoins() throws {
        var cluster = try ManualCluster(count: 3)
        let ids: [RaftNodeID] = [1, 2, 3]
        let reached7 = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(reached7)
        let leader = try #require(cluster.leader(among: ids))
        for k in 0..<5 { cluster.step(leader, .propose(id: UInt64(k), payload: [UInt8(k)])) }
        cluster.settle()
        let follower = ids.first { $0 != leader }!
        let before = cluster.node(follower)
        cluster.crash(follower)
        try cluster.restart(follower)
        let after = cluster.node(follower)
        #expect(after.term == before.term)
        #expect(after.votedFor == before.votedFor)
        #expect(after.lastLogIndex == before.lastLogIndex)
        #expect(after.role == .follower)
        // Applied state is rebuilt: committed entries are handed out again from the snapshot point.
        let reached8 = cluster.run(milliseconds: 500, ticking: ids, until: { $0.applied[Int(follower - 1)].count == 6 })
        #expect(reached8)
        #expect(cluster.applied[Int(follower - 1)] == cluster.applied[Int(leader - 1)])
    }

    @Test func restartWithDurablyAppliedStateDoesNotReapply() throws {
        var cluster = try ManualCluster(count: 1)
        let entries = (1...5).map { RaftLogEntry(term: 1, index: RaftIndex($0), payload: [UInt8($0)]) }
        try cluster.restore(1, RaftPersistentState(hardState: RaftHardState(term: 1, votedFor: 1), entries: entries, appliedIndex: 3))
        #expect(cluster.node(1).commitIndex == 3)
        #expect(cluster.node(1).appliedIndex == 3)
        let elected = cluster.run(milliseconds: 1_000, ticking: [1], until: { $0.node(1).commitIndex == 6 })
        #expect(elected)
        // Only entries after the durably applied index are handed out, then the new term's no-op.
        #expect(cluster.applied[0].map(\.index) == [4, 5, 6])
        #expect(throws: RaftError.self) {
            try RaftNode(configuration: RaftConfiguration(id: 1, voters: [1]),
                         restoring: RaftPersistentState(entries: entries, appliedIndex: 9), seed: 1, now: .zero)
        }
    }

    @Test func lostUnflushedWritesAreNotAcknowledged() throws {
        var cluster = try ManualCluster(count: 3)
        let append = RaftEnvelope(from: 1, to: 2, message: .append(RaftAppendRequest(
            term: 1, prevLogIndex: 0, prevLogTerm: 0, entries: [RaftLogEntry(term: 1, index: 1, payload: [1])], leaderCommit: 0)))
        #expect(sends(cluster.step(2, .receive(append))).isEmpty)
        cluster.crash(2)
        try cluster.restart(2)
        #expect(cluster.node(2).term == 0)
        #expect(cluster.node(2).lastLogIndex == 0)
    }

    @Test func leaderCommitsPreviousTermEntryOnlyThroughItsOwnTerm() throws {
        // Raft figure 8: node 1 (term-2 entry at index 2) wins term 4 with node 2's vote; node 3 holds a
        // conflicting term-3 entry at index 2. Replicating index 2 to a majority must not commit it.
        var cluster = try ManualCluster(count: 3) { $0.maxEntriesPerMessage = 1 }
        let base = RaftLogEntry(term: 1, index: 1, payload: [1])
        try cluster.restore(1, RaftPersistentState(hardState: RaftHardState(term: 3), entries: [base, RaftLogEntry(term: 2, index: 2, payload: [2])]))
        try cluster.restore(2, RaftPersistentState(hardState: RaftHardState(term: 3), entries: [base]))
        try cluster.restore(3, RaftPersistentState(hardState: RaftHardState(term: 3), entries: [base, RaftLogEntry(term: 3, index: 2, payload: [3])]))

        cluster.advance(milliseconds: 250)
        cluster.step(1, .tick)
        // Node 2 sees the first probe (which it rejects, lacking index 2) and then index 2 alone, but never
        // takes the term-4 no-op.
        var probesSeen = 0
        let withoutNewTerm: (RaftEnvelope) -> Bool = { envelope in
            guard case let .append(request) = envelope.message, request.entries.contains(where: { $0.term == 4 }) else { return true }
            probesSeen += 1
            return probesSeen == 1 && request.prevLogIndex == 2
        }
        cluster.settle(allow: { ($0.from != 3 && $0.to != 3) && withoutNewTerm($0) })
        #expect(cluster.node(1).role == .leader)
        #expect(cluster.node(1).term == 4)
        #expect(cluster.node(2).entry(at: 2)?.term == 2)
        #expect(cluster.disks[1].log.count == 2)
        // Durable on a majority, yet not of the leader's term: not committed.
        #expect(cluster.node(1).commitIndex < 2)
        #expect(cluster.applied[0].count < 2)

        // Indeed it can be overwritten: node 1 dies, node 3 wins with node 2's vote and replaces index 2.
        cluster.crash(1)
        let reached9 = cluster.run(milliseconds: 3_000, ticking: [2, 3], until: { $0.leader(among: [2, 3]) != nil })
        #expect(reached9)
        let reached10 = cluster.run(milliseconds: 500, ticking: [2, 3], until: { $0.node(2).commitIndex >= 3 })
        #expect(reached10)
        #expect(cluster.node(2).entry(at: 2)?.term == 3)
    }

    @Test func leadershipTransferHandsOverWithoutWaitingForTimeouts() throws {
        var cluster = try ManualCluster(count: 3)
        let ids: [RaftNodeID] = [1, 2, 3]
        let reached11 = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(reached11)
        let leader = try #require(cluster.leader(among: ids))
        let target = ids.first { $0 != leader }!
        let term = cluster.node(leader).term
        cluster.step(leader, .transferLeadership(to: target))
        let rejected = cluster.step(leader, .propose(id: 1, payload: [1]))
        #expect(rejected.contains { if case .proposalRejected(id: 1, .transferringLeadership(to: target)) = $0 { true } else { false } })
        // No ticks at all: the transfer is driven by messages only.
        cluster.settle()
        #expect(cluster.node(target).role == .leader)
        #expect(cluster.node(target).term == term + 1)
        #expect(cluster.node(leader).role == .follower)
    }

    @Test func malformedInputIsIgnoredNotFatal() throws {
        var cluster = try ManualCluster(count: 3)
        // Entries that skip an index.
        let gappy = RaftEnvelope(from: 1, to: 2, message: .append(RaftAppendRequest(
            term: 1, prevLogIndex: 0, prevLogTerm: 0,
            entries: [RaftLogEntry(term: 1, index: 1, payload: []), RaftLogEntry(term: 1, index: 3, payload: [])], leaderCommit: 5)))
        cluster.step(2, .receive(gappy))
        cluster.persist(2)
        #expect(cluster.node(2).lastLogIndex == 0)
        #expect(cluster.node(2).commitIndex == 0)
        // A message from a non-voter, and a bogus durability report.
        cluster.step(2, .receive(RaftEnvelope(from: 9, to: 2, message: .timeoutNow(term: 50))))
        cluster.step(2, .persisted(through: 1_000_000))
        #expect(cluster.node(2).term == 1)
        // A snapshot larger than the configured bound is refused.
        var small = try ManualCluster(count: 3) { $0.maxSnapshotBytes = 16 }
        let chunk = RaftEnvelope(from: 1, to: 2, message: .snapshot(RaftSnapshotRequest(
            term: 1, metadata: RaftSnapshotMetadata(index: 10, term: 1), offset: 0, data: Array(repeating: 0, count: 64), done: true)))
        let answer = small.step(2, .receive(chunk))
        #expect(!answer.contains { if case .installSnapshot = $0 { true } else { false } })
    }

    @Test func corruptPersistentStateAndBadConfigurationAreRejected() {
        let configuration = RaftConfiguration(id: 1, voters: [1, 2, 3])
        let gap = RaftPersistentState(entries: [RaftLogEntry(term: 1, index: 1, payload: []), RaftLogEntry(term: 1, index: 3, payload: [])])
        #expect(throws: RaftError.self) { try RaftNode(configuration: configuration, restoring: gap, seed: 1, now: .zero) }
        let falling = RaftPersistentState(entries: [RaftLogEntry(term: 2, index: 1, payload: []), RaftLogEntry(term: 1, index: 2, payload: [])])
        #expect(throws: RaftError.self) { try RaftNode(configuration: configuration, restoring: falling, seed: 1, now: .zero) }
        #expect(throws: RaftError.self) { try RaftNode(configuration: RaftConfiguration(id: 4, voters: [1, 2, 3]), restoring: RaftPersistentState(), seed: 1, now: .zero) }
        #expect(throws: RaftError.self) { try RaftNode(configuration: RaftConfiguration(id: 1, voters: [1, 1]), restoring: RaftPersistentState(), seed: 1, now: .zero) }
    }

    @Test func electionTimeoutsAreReproducibleFromTheSeed() throws {
        func firstCampaign(seed: UInt64) throws -> UInt64 {
            var node = try RaftNode(configuration: RaftConfiguration(id: 1, voters: [1, 2, 3]), restoring: RaftPersistentState(), seed: seed, now: .zero)
            for ms in stride(from: UInt64(0), through: 3_000, by: 1) {
                if !node.step(.tick, now: RaftInstant(nanoseconds: ms * 1_000_000)).isEmpty { return ms }
            }
            return .max
        }
        #expect(try firstCampaign(seed: 42) == firstCampaign(seed: 42))
        let distinct = Set(try (1...8).map { try firstCampaign(seed: $0) })
        #expect(distinct.count > 1)
    }
}
