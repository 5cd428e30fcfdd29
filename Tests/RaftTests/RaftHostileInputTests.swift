import Testing
@testable import Raft

@Suite struct RaftHostileInputTests {
    @Test func extremeTermsAndIndexesDoNotTrap() throws {
        var cluster = try ManualCluster(count: 3)
        let huge = RaftEnvelope(from: 1, to: 2, message: .vote(RaftVoteRequest(term: .max, lastLogIndex: .max, lastLogTerm: .max, isPreVote: false)))
        cluster.step(2, .receive(huge))
        cluster.step(2, .receive(RaftEnvelope(from: 1, to: 2, message: .append(RaftAppendRequest(
            term: 3, prevLogIndex: .max, prevLogTerm: .max, entries: [RaftLogEntry(term: 3, index: 0, payload: [])], leaderCommit: .max)))))
        cluster.persist(2)
        cluster.advance(milliseconds: 500)
        cluster.step(2, .tick)
        #expect(cluster.node(2).term < RaftTerm.max / 2)
        #expect(cluster.node(2).commitIndex == 0)
    }

    @Test func leaderIgnoresImpossibleAcknowledgements() throws {
        var cluster = try ManualCluster(count: 3)
        let ids: [RaftNodeID] = [1, 2, 3]
        let elected = cluster.run(milliseconds: 2_000, ticking: ids, until: { $0.leader(among: ids) != nil })
        #expect(elected)
        let leader = try #require(cluster.leader(among: ids))
        let peer = ids.first { $0 != leader }!
        let term = cluster.node(leader).term
        let commit = cluster.node(leader).commitIndex
        let bogus: [RaftMessage] = [
            .appendResponse(RaftAppendResponse(term: term, success: true, matchIndex: .max)),
            .appendResponse(RaftAppendResponse(term: term, success: false, matchIndex: 0, rejectedIndex: .max, conflictTerm: .max, conflictIndex: .max)),
            .snapshotResponse(RaftSnapshotResponse(term: term, metadata: RaftSnapshotMetadata(index: .max, term: .max), nextOffset: .max, installed: true, matchIndex: .max)),
        ]
        for message in bogus { cluster.step(leader, .receive(RaftEnvelope(from: peer, to: leader, message: message))) }
        #expect(cluster.node(leader).role == .leader)
        #expect(cluster.node(leader).commitIndex == commit)
        cluster.step(leader, .propose(id: 1, payload: [1]))
        let committed = cluster.run(milliseconds: 500, ticking: ids, until: { $0.applied.allSatisfy { $0.last?.payload == [1] } })
        #expect(committed)
    }
}
