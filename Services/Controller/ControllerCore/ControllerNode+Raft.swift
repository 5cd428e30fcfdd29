import ClusterMetadata
import NIOCore
import Raft

/// Carrying out the Raft node's actions: messages to peers, group-committed storage writes, applying committed
/// entries and snapshots to the metadata state, and status changes.
extension ControllerNode {
    func step(_ input: RaftInput) {
        execute(raft.step(input, now: Self.raftInstant(clock.now)))
    }

    private func execute(_ actions: [RaftAction]) {
        var wroteStorage = false
        for action in actions {
            switch action {
            case let .send(envelope):
                send(envelope)
            case let .persistHardState(hard, sequence):
                pendingWrites.append(PendingWrite(operation: .hardState(hard), sequence: sequence))
                wroteStorage = true
            case let .appendLog(entries, sequence):
                pendingWrites.append(PendingWrite(operation: .append(entries), sequence: sequence))
                wroteStorage = true
            case let .installSnapshot(snapshot, sequence):
                restore(snapshot)
                pendingWrites.append(PendingWrite(operation: .installSnapshot(snapshot), sequence: sequence))
                wroteStorage = true
            case let .compactLog(through):
                pendingWrites.append(PendingWrite(operation: .compact(through: through)))
                wroteStorage = true
            case let .apply(entries):
                apply(entries)
            case let .takeSnapshot(throughIndex):
                // Entries are applied synchronously in action order, so the state is exactly at `throughIndex`.
                guard throughIndex == appliedIndex else {
                    logger.warning("snapshot requested at \(throughIndex) but applied \(appliedIndex)")
                    continue
                }
                let data = Array(metadata.encodeSnapshot().readableBytesView)
                let snapshot = RaftSnapshot(metadata: RaftSnapshotMetadata(index: appliedIndex, term: appliedTerm), data: data)
                pendingWrites.append(PendingWrite(
                    operation: .saveSnapshot(snapshot), afterDurable: .snapshotCreated(index: appliedIndex, data: data)))
                lastAppliedStateWrite = appliedIndex
                wroteStorage = true
            case let .statusChanged(newStatus):
                statusChanged(newStatus)
            case let .proposalAccepted(id, index, term):
                proposalAccepted(id, index: index, term: term)
            case let .proposalRejected(id, rejection):
                switch rejection {
                case let .notLeader(hint): finishProposal(id, .notLeader(leaderId: hint.map { Int32(truncatingIfNeeded: $0) }))
                case let .transferringLeadership(to): finishProposal(id, .notLeader(leaderId: Int32(truncatingIfNeeded: to)))
                }
            }
        }
        if wroteStorage { flushRequest.yield() }
    }

    private func restore(_ snapshot: RaftSnapshot) {
        do {
            metadata = try MetadataState(snapshot: ByteBuffer(bytes: snapshot.data))
        } catch {
            // The leader's committed state does not decode: continuing would diverge from the quorum.
            fatalError("controller \(configuration.nodeId): snapshot at \(snapshot.metadata.index) does not decode: \(error)")
        }
        appliedIndex = snapshot.metadata.index
        appliedTerm = snapshot.metadata.term
        lastAppliedStateWrite = appliedIndex
        resumeWaiters(waiters.applied(through: appliedIndex))
    }

    private func apply(_ entries: [RaftLogEntry]) {
        for entry in entries {
            var result = MetadataResult.ok
            var resultIndex = entry.index
            if entry.kind == .command {
                do {
                    let decoded = try MetadataLogEntry(decoding: ByteBuffer(bytes: entry.payload))
                    let applied = metadata.apply(decoded, index: entry.index, term: entry.term)
                    result = applied.result
                    resultIndex = applied.index
                } catch {
                    // Only the leader encodes commands, from decoded ones; an undecodable entry is a broken invariant
                    // on every replica alike, so skipping it keeps replicas identical.
                    logger.error("committed entry does not decode", metadata: ["raft.index": "\(entry.index)", "error": "\(error)"])
                    result = .error(MetadataError(MetadataErrorCode.invalidRequest, "command does not decode"))
                }
            }
            appliedIndex = entry.index
            appliedTerm = entry.term
            instruments.applied.increment()
            proposalApplied(index: entry.index, term: entry.term, result, resultIndex: resultIndex)
        }
        if appliedIndex >= lastAppliedStateWrite + configuration.appliedStateInterval {
            lastAppliedStateWrite = appliedIndex
            pendingWrites.append(PendingWrite(operation: .appliedState(
                index: appliedIndex, term: appliedTerm, data: Array(metadata.encodeSnapshot().readableBytesView))))
            flushRequest.yield()
        }
        instruments.appliedIndex.record(Double(appliedIndex))
        instruments.commitIndex.record(Double(raft.commitIndex))
        resumeWaiters(waiters.applied(through: appliedIndex))
        // A reassignment just applied completes now rather than at the next tick (up to 100 ms away); the
        // machine proposes each move once, so asking again at the tick changes nothing.
        if status.role == .leader, !metadata.reassignments.isEmpty {
            carryOut(reassignments.tick(now: clock.now, pending: metadata.pendingReassignments, nodes: metadata.nodes))
        }
    }

    private func statusChanged(_ newStatus: RaftStatus) {
        let wasLeader = status.role == .leader
        status = newStatus
        instruments.term.record(Double(newStatus.term))
        instruments.isLeader.record(newStatus.role == .leader ? 1 : 0)
        logger.info("raft status", metadata: [
            "raft.role": "\(newStatus.role)", "raft.term": "\(newStatus.term)",
            "raft.leader": "\(newStatus.leaderID.map(String.init) ?? "none")",
        ])
        sessions.leadershipChanged(leading: newStatus.role == .leader)
        if wasLeader, newStatus.role != .leader {
            failProposals(leaderId: leaderHint)
        }
        resumeWaiters(waiters.statusChanged())
    }

    // MARK: Group commit

    /// Starts the flusher loop unless it runs already.
    func startFlusher() {
        guard flusher == nil else { return }
        flusher = Task { await self.runFlusher() }
    }

    /// Writes everything pending as one batch whenever asked, until the request stream finishes; a batch
    /// collects whatever Raft produced while the previous one was being written.
    private func runFlusher() async {
        for await _ in flushRequests {
            while !pendingWrites.isEmpty {
                let batch = pendingWrites
                pendingWrites.removeAll()
                instruments.storageBatch.record(batch.count)
                let started = clock.now
                do {
                    try await storage.write(batch.map(\.operation))
                } catch {
                    // A write that cannot be made durable must not be acknowledged; Raft cannot continue without it.
                    fatalError("controller storage write failed: \(error)")
                }
                instruments.storageWrite.recordNanoseconds(Int64(((clock.now - started) / .nanoseconds(1)).rounded()))
                if !stopped {
                    if let last = batch.compactMap(\.sequence).max() { step(.persisted(through: last)) }
                    for write in batch { if let input = write.afterDurable { step(input) } }
                }
            }
        }
    }
}
