import KafkaProtocol
import NIOCore
import Raft

/// Conversion between Raft's messages and the RaftMessage wire request.
enum RaftWire {
    static func encode(_ envelope: RaftEnvelope) -> RaftMessageRequest {
        var wire = RaftMessageRequest()
        wire.fromId = Int64(bitPattern: envelope.from)
        wire.toId = Int64(bitPattern: envelope.to)
        wire.term = Int64(bitPattern: envelope.message.term)
        switch envelope.message {
        case let .vote(m):
            wire.kind = 0
            wire.lastLogIndex = Int64(bitPattern: m.lastLogIndex)
            wire.lastLogTerm = Int64(bitPattern: m.lastLogTerm)
            wire.isPreVote = m.isPreVote
            wire.isLeadershipTransfer = m.isLeadershipTransfer
        case let .voteResponse(m):
            wire.kind = 1
            wire.granted = m.granted
            wire.isPreVote = m.isPreVote
        case let .append(m):
            wire.kind = 2
            wire.prevLogIndex = Int64(bitPattern: m.prevLogIndex)
            wire.prevLogTerm = Int64(bitPattern: m.prevLogTerm)
            wire.leaderCommit = Int64(bitPattern: m.leaderCommit)
            wire.entries = m.entries.map { entry in
                var e = RaftMessageRequest.RaftEntry()
                e.index = Int64(bitPattern: entry.index)
                e.term = Int64(bitPattern: entry.term)
                e.entryKind = Int8(bitPattern: entry.kind.rawValue)
                e.payload = ByteBuffer(bytes: entry.payload)
                return e
            }
        case let .appendResponse(m):
            wire.kind = 3
            wire.success = m.success
            wire.matchIndex = Int64(bitPattern: m.matchIndex)
            wire.rejectedIndex = Int64(bitPattern: m.rejectedIndex)
            wire.conflictTerm = m.conflictTerm.map { Int64(bitPattern: $0) } ?? -1
            wire.conflictIndex = Int64(bitPattern: m.conflictIndex)
        case let .snapshot(m):
            wire.kind = 4
            wire.snapshotIndex = Int64(bitPattern: m.metadata.index)
            wire.snapshotTerm = Int64(bitPattern: m.metadata.term)
            wire.offset = Int64(bitPattern: m.offset)
            wire.data = ByteBuffer(bytes: m.data)
            wire.done = m.done
        case let .snapshotResponse(m):
            wire.kind = 5
            wire.snapshotIndex = Int64(bitPattern: m.metadata.index)
            wire.snapshotTerm = Int64(bitPattern: m.metadata.term)
            wire.offset = Int64(bitPattern: m.nextOffset)
            wire.done = m.installed
            wire.matchIndex = Int64(bitPattern: m.matchIndex)
        case .timeoutNow:
            wire.kind = 6
        }
        return wire
    }

    static func decode(_ wire: RaftMessageRequest) throws(ProtocolError) -> RaftEnvelope {
        let term = UInt64(bitPattern: wire.term)
        let message: RaftMessage
        switch wire.kind {
        case 0:
            message = .vote(RaftVoteRequest(
                term: term, lastLogIndex: UInt64(bitPattern: wire.lastLogIndex), lastLogTerm: UInt64(bitPattern: wire.lastLogTerm),
                isPreVote: wire.isPreVote, isLeadershipTransfer: wire.isLeadershipTransfer))
        case 1:
            message = .voteResponse(RaftVoteResponse(term: term, granted: wire.granted, isPreVote: wire.isPreVote))
        case 2:
            var entries: [RaftLogEntry] = []
            entries.reserveCapacity(wire.entries.count)
            for e in wire.entries {
                guard let kind = RaftLogEntry.Kind(rawValue: UInt8(bitPattern: e.entryKind)) else {
                    throw .invalid("raft entry kind \(e.entryKind)")
                }
                entries.append(RaftLogEntry(
                    term: UInt64(bitPattern: e.term), index: UInt64(bitPattern: e.index), kind: kind,
                    payload: Array(e.payload.readableBytesView)))
            }
            message = .append(RaftAppendRequest(
                term: term, prevLogIndex: UInt64(bitPattern: wire.prevLogIndex), prevLogTerm: UInt64(bitPattern: wire.prevLogTerm),
                entries: entries, leaderCommit: UInt64(bitPattern: wire.leaderCommit)))
        case 3:
            message = .appendResponse(RaftAppendResponse(
                term: term, success: wire.success, matchIndex: UInt64(bitPattern: wire.matchIndex),
                rejectedIndex: UInt64(bitPattern: wire.rejectedIndex),
                conflictTerm: wire.conflictTerm < 0 ? nil : UInt64(bitPattern: wire.conflictTerm),
                conflictIndex: UInt64(bitPattern: wire.conflictIndex)))
        case 4:
            message = .snapshot(RaftSnapshotRequest(
                term: term, metadata: RaftSnapshotMetadata(index: UInt64(bitPattern: wire.snapshotIndex), term: UInt64(bitPattern: wire.snapshotTerm)),
                offset: UInt64(bitPattern: wire.offset), data: Array(wire.data.readableBytesView), done: wire.done))
        case 5:
            message = .snapshotResponse(RaftSnapshotResponse(
                term: term, metadata: RaftSnapshotMetadata(index: UInt64(bitPattern: wire.snapshotIndex), term: UInt64(bitPattern: wire.snapshotTerm)),
                nextOffset: UInt64(bitPattern: wire.offset), installed: wire.done, matchIndex: UInt64(bitPattern: wire.matchIndex)))
        case 6:
            message = .timeoutNow(term: term)
        default:
            throw .invalid("raft message kind \(wire.kind)")
        }
        return RaftEnvelope(from: UInt64(bitPattern: wire.fromId), to: UInt64(bitPattern: wire.toId), message: message)
    }
}
