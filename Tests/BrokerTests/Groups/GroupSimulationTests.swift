@testable import BrokerCore
import KafkaProtocol
import NIOCore
import Testing
import TestKit

/// Seeded random runs of one group: members join (static or dynamic, with changing protocols),
/// sync, heartbeat, leave and go silent while time passes and metadata writes succeed or fail.
/// After every step the group's invariants hold; at the end every request has been answered.
@Suite struct GroupSimulationTests {
    static func checkInvariants(_ group: ClassicGroup, step: Int, seed: UInt64) {
        let context = "seed \(seed) step \(step) state \(group.state)"
        switch group.state {
        case .empty:
            #expect(group.members.isEmpty, "\(context): an empty group has no members")
        case .stable, .completingRebalance:
            #expect(!group.members.isEmpty, "\(context): members expected")
            #expect(group.protocolName != nil, "\(context): a protocol is chosen")
            #expect(group.members.allSatisfy { $0.joinToken == nil }, "\(context): no join waits outside a rebalance")
        case .preparingRebalance, .dead:
            break
        }
        if group.state != .completingRebalance {
            #expect(group.members.allSatisfy { $0.syncToken == nil }, "\(context): syncs wait only while completing")
        }
        if !group.members.isEmpty {
            #expect(group.leaderId.map { group.member($0) != nil } == true, "\(context): the leader is a member")
        }
        for member in group.members {
            if let instance = member.groupInstanceId { #expect(group.staticMembers[instance] == member.memberId, "\(context): static map") }
        }
        #expect(Set(group.members.map(\.memberId)).count == group.members.count, "\(context): member ids are unique")
        #expect(group.staticMembers.count == group.members.filter { $0.groupInstanceId != nil }.count, "\(context): no stale static ids")
    }

    @Test(arguments: UInt64(1)...200) func randomRunsKeepInvariantsAndAnswerEverything(_ seed: UInt64) {
        var random = SeededRandom(seed: seed)
        var h = GroupHarness(initialDelayMs: seed % 2 == 0 ? 3_000 : 0)
        var issuedJoins: [UInt64] = []
        var issuedSyncs: [UInt64] = []
        // Member ids the clients believe they have, by client slot; static slots use an instance id.
        var known: [Int: String] = [:]
        var nextId = 0
        var statesSeen: Set<GroupState> = []
        let protocolChoices = [["range"], ["range", "roundrobin"], ["roundrobin", "range"], ["cooperative-sticky", "range"]]
        for step in 0..<400 {
            let slot = Int.random(in: 0..<5, using: &random)
            let instance: String? = slot < 2 ? "static-\(slot)" : nil
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<20:
                let memberId = known[slot] ?? ""
                nextId += 1
                let token = h.join(
                    memberId, newId: "slot\(slot)-\(nextId)", instance: instance, protocols: protocolChoices.randomElement(using: &random)!,
                    v4: Bool.random(using: &random), rebalance: Int32.random(in: 6_000...20_000, using: &random), skip: Bool.random(using: &random))
                issuedJoins.append(token)
                if let outcome = h.joins[token], outcome.error == .none || outcome.error == .memberIdRequired { known[slot] = outcome.memberId }
            case 20..<50:
                guard let memberId = known[slot] else { continue }
                let assignments = h.group.members.map { ($0.memberId, "a-\($0.memberId)") }
                issuedSyncs.append(
                    h.sync(memberId, generation: h.group.generationId, assignments: Dictionary(uniqueKeysWithValues: assignments), instance: instance))
            case 50..<72:
                if let memberId = known[slot] { _ = h.heartbeat(memberId, generation: h.group.generationId, instance: instance) }
            case 72..<75:
                if let memberId = known[slot] {
                    h.absorb(h.group.leave([(memberId, instance)], now: h.now).actions)
                    known[slot] = nil
                }
            default:
                h.advance(Int64.random(in: 100...4_000, using: &random))
            }
            // Metadata writes mostly complete before the next request, and sometimes fail.
            if Int.random(in: 0..<10, using: &random) < 8 { h.finishStores(success: Int.random(in: 0..<10, using: &random) > 0) }
            // Join answers hand out ids; remember the latest for each slot.
            for (token, outcome) in h.joins where issuedJoins.last == token && outcome.error == .none {
                known[slot] = outcome.memberId
            }
            Self.checkInvariants(h.group, step: step, seed: seed)
            statesSeen.insert(h.group.state)
        }
        // The run completed rebalances, not just failed requests (states are sampled between steps,
        // so a rebalance that completes within one step shows only its end).
        #expect(!statesSeen.isDisjoint(with: [.completingRebalance, .stable]), "seed \(seed): only \(statesSeen)")
        // Everyone goes quiet: rebalances and sessions run out, and every request gets its answer.
        for _ in 0..<20 {
            h.finishStores()
            h.advance(31_000)
            h.finishStores()
            Self.checkInvariants(h.group, step: -1, seed: seed)
        }
        let unansweredJoins = issuedJoins.filter { h.joins[$0] == nil }
        let unansweredSyncs = issuedSyncs.filter { h.syncs[$0] == nil }
        #expect(unansweredJoins.isEmpty, "seed \(seed): joins never answered: \(unansweredJoins)")
        #expect(unansweredSyncs.isEmpty, "seed \(seed): syncs never answered: \(unansweredSyncs)")
        #expect(h.group.members.isEmpty, "seed \(seed): silent members expire")
        #expect(h.group.state == .empty, "seed \(seed)")
    }
}
