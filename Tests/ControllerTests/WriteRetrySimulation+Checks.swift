@testable import ClusterMetadata
import NIOCore
@testable import Raft

/// A broken invariant or lost liveness in `WriteRetrySimulation`.
struct SimFailure: Error, CustomStringConvertible {
    var description: String
}

/// The invariants of `WriteRetrySimulation`: one committed log, each logical write applied once, every answer the
/// first application's, and replicas identical.
extension WriteRetrySimulation {
    /// Records an entry a node applied: every node must apply the same entry at an index.
    func recordCommitted(_ entry: RaftLogEntry, by n: Int) throws(SimFailure) {
        let k = Int(entry.index)
        while committed.count <= k { committed.append(nil) }
        if let known = committed[k] {
            guard known == entry else {
                throw fail("node \(n + 1) applied term \(entry.term) at \(entry.index), where term \(known.term) was applied")
            }
        } else {
            committed[k] = entry
        }
    }

    /// The (client, write) a command belongs to, read from its content alone.
    func logicalWrite(of command: MetadataCommand) throws(SimFailure) -> Int {
        switch command {
        case let .registerNode(registration): return Int(registration.id)
        case let .prepareObject(_, deadline): return Int(deadline)
        case let .createTopics(specs) where specs.count == 1 && specs[0].name.hasPrefix("t"):
            if let key = Int(specs[0].name.dropFirst()) { return key }
        default: break
        }
        throw fail("committed command \(command) is no client's write")
    }

    /// Checks the end state: run after `run()` returned.
    func checkOutcome() throws(SimFailure) {
        // What applying each logical write once, at its first committed entry, produces.
        var reference = MetadataState()
        var first: [Int: AppliedWrite] = [:]
        for k in 1..<committed.count {
            guard let entry = committed[k] else { throw fail("index \(k) is below the commit index but no node applied it") }
            guard entry.kind == .command else { continue }
            let decoded: MetadataLogEntry
            do { decoded = try MetadataLogEntry(decoding: ByteBuffer(bytes: entry.payload)) } catch {
                throw fail("committed entry \(k) does not decode: \(error)")
            }
            let key = try logicalWrite(of: decoded.command)
            if first[key] == nil {
                first[key] = AppliedWrite(result: reference.apply(decoded.command, index: entry.index, term: entry.term), index: entry.index)
            } else {
                stats.duplicateEntriesCommitted += 1
            }
        }
        // Every violation is reported, not only the first, so a run shows both kinds of double application.
        var problems: [String] = [], stateProblems: [String] = []
        for c in 0..<parameters.clients {
            for w in 0..<parameters.writesPerClient {
                guard let expected = first[c * 1000 + w] else { throw fail("client \(c) write \(w) was answered but never committed") }
                guard !answers[c][w].isEmpty else { throw fail("client \(c) write \(w) has no answer") }
                for answer in answers[c][w] where answer != .applied(expected.result, index: expected.index) {
                    problems.append("client \(c) write \(w) was answered \(answer), but it was first applied at \(expected.index) with \(expected.result)")
                }
            }
        }
        for n in nodes.indices {
            let state = nodes[n].metadata
            let differences = [
                ("nodes", state.nodes == reference.nodes), ("topics", state.topics == reference.topics),
                ("streams", state.streams == reference.streams), ("objects", state.objects == reference.objects),
                ("next incarnation", state.nextIncarnation == reference.nextIncarnation),
                ("next object id", state.nextObjectId == reference.nextObjectId),
                ("next producer id", state.nextProducerId == reference.nextProducerId),
            ].filter { !$0.1 }.map(\.0)
            if !differences.isEmpty {
                stateProblems.append("node \(n + 1)'s metadata differs from each write applied once in: \(differences.joined(separator: ", "))")
            }
        }
        guard problems.isEmpty, stateProblems.isEmpty else {
            throw fail((problems.prefix(4) + stateProblems.prefix(4)).joined(separator: "\n"))
        }
        guard nodes.allSatisfy({ $0.metadata == nodes[0].metadata }) else { throw fail("replicas' metadata differ at the end") }
    }
}
