import KafkaProtocol
import NIOCore

/// One classic group (Kafka's classic rebalance protocol), a deterministic state machine: every step
/// takes the time explicitly and returns the responses to deliver and the writes to make. Members
/// are kept in join order so every step is reproducible.
public struct ClassicGroup: Sendable {
    public let groupId: String
    public let config: GroupConfig
    public internal(set) var state: GroupState = .empty
    public internal(set) var protocolType: String?
    public internal(set) var protocolName: String?
    public internal(set) var generationId: Int32 = 0
    public internal(set) var leaderId: String?
    public internal(set) var members: [GroupMember] = []
    /// When the state last changed (ms).
    public internal(set) var stateTimestamp: Int64
    /// Committed offsets.
    public internal(set) var offsets: [OffsetKey: CommittedOffset] = [:]
    /// Where each offset's record sits in `__consumer_offsets`: a late-completing write of an older
    /// record must not overwrite a newer one.
    var offsetPositions: [OffsetKey: Int64] = [:]
    var staticMembers: [String: String] = [:]
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire unless used.
    var pendingMembers: [String: Int64] = [:]
    var newMemberAdded = false
    var joinDeadline: Int64?
    var initialDelayActive = false
    var initialDelayRemaining: Int64 = 0

    public init(groupId: String, config: GroupConfig = GroupConfig(), now: Int64) {
        self.groupId = groupId
        self.config = config
        self.stateTimestamp = now
    }

    // MARK: Queries

    public func member(_ memberId: String) -> GroupMember? { members.first { $0.memberId == memberId } }

    func memberIndex(_ memberId: String) -> Int? { members.firstIndex { $0.memberId == memberId } }

    public func isLeader(_ memberId: String) -> Bool { leaderId == memberId }

    /// Member ids waiting for their MEMBER_ID_REQUIRED rejoin, sorted.
    public var pendingMemberIds: [String] { pendingMembers.keys.sorted() }

    /// The group has nothing worth keeping: no members, no offsets.
    public var isForgettable: Bool { state == .empty && members.isEmpty && offsets.isEmpty && pendingMembers.isEmpty }

    /// Member ids whose instance id maps elsewhere, or a member id claiming someone else's instance id.
    func isStaticMemberFenced(memberId: String, instanceId: String?) -> Bool {
        guard let instanceId, let mapped = staticMembers[instanceId] else { return false }
        return mapped != memberId
    }

    /// Topics the members of a consumer group subscribe to, from their subscriptions for the chosen
    /// protocol (OffsetDelete refuses to delete those). Unparseable subscriptions count as none.
    public var subscribedTopics: Set<String> {
        guard protocolType == "consumer", let protocolName else { return [] }
        var topics: Set<String> = []
        for member in members {
            var bytes = member.metadata(for: protocolName)
            guard let version: Int16 = try? bytes.readKafkaInteger(),
                  let subscription = try? ConsumerProtocolSubscription(from: &bytes, version: min(max(version, 0), 3)) else { continue }
            topics.formUnion(subscription.topics)
        }
        return topics
    }

    // MARK: JoinGroup

    /// A JoinGroup request. `newMemberId` is the id to hand out if the request has none (the driver
    /// makes it, so the state machine needs no randomness).
    public mutating func join(_ input: JoinInput, token: UInt64, newMemberId: String, now: Int64) -> [GroupAction] {
        func fail(_ code: KafkaErrorCode) -> [GroupAction] {
            [.joinResponse(token: token, JoinOutcome(error: code, memberId: input.memberId))]
        }
        guard input.sessionTimeoutMs >= config.minSessionTimeoutMs, input.sessionTimeoutMs <= config.maxSessionTimeoutMs else {
            return fail(.invalidSessionTimeout)
        }
        guard state != .dead else { return fail(.coordinatorNotAvailable) }
        guard supportsProtocols(input.protocolType, input.protocols) else { return fail(.inconsistentGroupProtocol) }

        if input.memberId.isEmpty {
            if let instanceId = input.groupInstanceId {
                if let oldMemberId = staticMembers[instanceId] {
                    return replaceStaticMember(instanceId: instanceId, oldMemberId: oldMemberId, newMemberId: newMemberId, input, token: token, now: now)
                }
                return addMemberAndRebalance(newMemberId, input, token: token, now: now)
            }
            if input.requireKnownMemberId {
                pendingMembers[newMemberId] = now + Int64(input.sessionTimeoutMs)
                return [.joinResponse(token: token, JoinOutcome(error: .memberIdRequired, memberId: newMemberId))]
            }
            return addMemberAndRebalance(newMemberId, input, token: token, now: now)
        }

        if pendingMembers.removeValue(forKey: input.memberId) != nil {
            return addMemberAndRebalance(input.memberId, input, token: token, now: now)
        }
        if isStaticMemberFenced(memberId: input.memberId, instanceId: input.groupInstanceId) { return fail(.fencedInstanceId) }
        guard let index = memberIndex(input.memberId) else { return fail(.unknownMemberId) }
        switch state {
        case .preparingRebalance:
            return updateMemberAndRebalance(index, input, token: token, now: now)
        case .completingRebalance:
            if members[index].protocols == input.protocols {
                // The member lost its join response: send the current generation again.
                heartbeat(index, now: now)
                return [.joinResponse(token: token, currentJoinOutcome(for: input.memberId, includeMembers: isLeader(input.memberId)))]
            }
            return updateMemberAndRebalance(index, input, token: token, now: now)
        case .stable:
            if isLeader(input.memberId) || members[index].protocols != input.protocols {
                return updateMemberAndRebalance(index, input, token: token, now: now)
            }
            heartbeat(index, now: now)
            return [.joinResponse(token: token, currentJoinOutcome(for: input.memberId, includeMembers: false))]
        case .empty, .dead:
            return fail(.unknownMemberId)
        }
    }

    func supportsProtocols(_ type: String, _ protocols: [GroupProtocol]) -> Bool {
        if state == .empty || members.isEmpty { return !type.isEmpty && !protocols.isEmpty }
        guard protocolType == type else { return false }
        return protocols.contains { candidate in members.allSatisfy { member in member.protocols.contains { $0.name == candidate.name } } }
    }

    func currentJoinOutcome(for memberId: String, includeMembers: Bool) -> JoinOutcome {
        var outcome = JoinOutcome(error: .none, memberId: memberId)
        outcome.generationId = generationId
        outcome.protocolType = protocolType
        outcome.protocolName = protocolName
        outcome.leaderId = leaderId ?? ""
        if includeMembers { outcome.members = currentMemberMetadata() }
        return outcome
    }

    func currentMemberMetadata() -> [JoinOutcome.Member] {
        members.map { JoinOutcome.Member(memberId: $0.memberId, groupInstanceId: $0.groupInstanceId, metadata: $0.metadata(for: protocolName)) }
    }

    mutating func heartbeat(_ index: Int, now: Int64) {
        members[index].latestHeartbeat = now
        members[index].heartbeatDeadline = now + Int64(members[index].sessionTimeoutMs)
    }

    mutating func addMemberAndRebalance(_ memberId: String, _ input: JoinInput, token: UInt64, now: Int64) -> [GroupAction] {
        var member = GroupMember(
            memberId: memberId, groupInstanceId: input.groupInstanceId, clientId: input.clientId, clientHost: input.clientHost,
            rebalanceTimeoutMs: input.rebalanceTimeoutMs, sessionTimeoutMs: input.sessionTimeoutMs, protocolType: input.protocolType,
            protocols: input.protocols)
        member.joinToken = token
        member.isNew = true
        member.latestHeartbeat = now
        member.heartbeatDeadline = now + Int64(input.sessionTimeoutMs)
        if state == .preparingRebalance && generationId == 0 { newMemberAdded = true }
        if members.isEmpty { protocolType = input.protocolType }
        if leaderId == nil { leaderId = memberId }
        if let instanceId = input.groupInstanceId { staticMembers[instanceId] = memberId }
        members.append(member)
        var actions = maybePrepareRebalance(now: now)
        actions += tryCompleteJoin(now: now)
        return actions
    }

    mutating func updateMemberAndRebalance(_ index: Int, _ input: JoinInput, token: UInt64, now: Int64) -> [GroupAction] {
        var actions: [GroupAction] = []
        if let previous = members[index].joinToken {
            // A second join from the same member replaces the first, which is answered now.
            actions.append(.joinResponse(token: previous, JoinOutcome(error: .rebalanceInProgress, memberId: input.memberId)))
        }
        members[index].protocols = input.protocols
        members[index].rebalanceTimeoutMs = input.rebalanceTimeoutMs
        members[index].sessionTimeoutMs = input.sessionTimeoutMs
        members[index].clientId = input.clientId
        members[index].clientHost = input.clientHost
        members[index].joinToken = token
        heartbeat(index, now: now)
        actions += maybePrepareRebalance(now: now)
        actions += tryCompleteJoin(now: now)
        return actions
    }

    /// KIP-345: a static member restarting under the same instance id takes over its old member id's
    /// place; a stable group whose chosen protocol does not change keeps its assignment.
    mutating func replaceStaticMember(
        instanceId: String, oldMemberId: String, newMemberId: String, _ input: JoinInput, token: UInt64, now: Int64
    ) -> [GroupAction] {
        guard let index = memberIndex(oldMemberId) else {
            staticMembers[instanceId] = nil
            return addMemberAndRebalance(newMemberId, input, token: token, now: now)
        }
        let previousLeader = leaderId
        var actions: [GroupAction] = []
        if let previous = members[index].joinToken {
            actions.append(.joinResponse(token: previous, JoinOutcome(error: .fencedInstanceId, memberId: oldMemberId)))
            members[index].joinToken = nil
        }
        if let previous = members[index].syncToken {
            actions.append(.syncResponse(token: previous, SyncOutcome(error: .fencedInstanceId)))
            members[index].syncToken = nil
        }
        members[index].memberId = newMemberId
        staticMembers[instanceId] = newMemberId
        if leaderId == oldMemberId { leaderId = newMemberId }
        members[index].rebalanceTimeoutMs = input.rebalanceTimeoutMs
        members[index].sessionTimeoutMs = input.sessionTimeoutMs
        members[index].clientId = input.clientId
        members[index].clientHost = input.clientHost
        heartbeat(index, now: now)
        switch state {
        case .stable:
            members[index].protocols = input.protocols
            guard selectProtocol() == protocolName else {
                // The chosen protocol would change: the group must rebalance to stay consistent.
                members[index].joinToken = token
                return actions + maybePrepareRebalance(now: now) + tryCompleteJoin(now: now)
            }
            let isLeader = isLeader(newMemberId)
            var outcome = currentJoinOutcome(for: newMemberId, includeMembers: false)
            if input.supportsSkipAssignment && isLeader {
                outcome.skipAssignment = true
                outcome.members = currentMemberMetadata()
            } else {
                // Before v9 the old leader id keeps a restarted leader from assigning (a stable group
                // would not hand its new assignment out).
                outcome.leaderId = previousLeader ?? ""
            }
            return actions + [.store(.staticRejoin(token: token, outcome: outcome))]
        case .completingRebalance:
            // The leader may already be assigning to the old member id: start over.
            members[index].protocols = input.protocols
            members[index].joinToken = token
            return actions + prepareRebalance(now: now) + tryCompleteJoin(now: now)
        case .preparingRebalance:
            members[index].protocols = input.protocols
            members[index].joinToken = token
            return actions + tryCompleteJoin(now: now)
        case .empty, .dead:
            return actions + [.joinResponse(token: token, JoinOutcome(error: .unknownMemberId, memberId: input.memberId))]
        }
    }

    mutating func maybePrepareRebalance(now: Int64) -> [GroupAction] {
        switch state {
        case .stable, .completingRebalance, .empty: return prepareRebalance(now: now)
        case .preparingRebalance, .dead: return []
        }
    }

    mutating func prepareRebalance(now: Int64) -> [GroupAction] {
        var actions: [GroupAction] = []
        if state == .completingRebalance {
            for index in members.indices {
                members[index].assignment = ByteBuffer()
                if let token = members[index].syncToken {
                    actions.append(.syncResponse(token: token, SyncOutcome(error: .rebalanceInProgress)))
                    members[index].syncToken = nil
                }
            }
        }
        let rebalanceTimeout = Int64(members.map(\.rebalanceTimeoutMs).max() ?? 0)
        if state == .empty && config.initialRebalanceDelayMs > 0 {
            initialDelayActive = true
            newMemberAdded = false
            let delay = min(config.initialRebalanceDelayMs, max(rebalanceTimeout, 0))
            joinDeadline = now + delay
            initialDelayRemaining = max(rebalanceTimeout - delay, 0)
        } else {
            initialDelayActive = false
            joinDeadline = now + max(rebalanceTimeout, 0)
        }
        transition(to: .preparingRebalance, now: now)
        // As Kafka's purgatory does: a rebalance nobody needs to rejoin (the last member left) ends at once.
        return actions + tryCompleteJoin(now: now)
    }

    mutating func transition(to newState: GroupState, now: Int64) {
        state = newState
        stateTimestamp = now
    }

    var allMembersJoined: Bool { pendingMembers.isEmpty && members.allSatisfy { $0.joinToken != nil } }

    mutating func tryCompleteJoin(now: Int64) -> [GroupAction] {
        guard state == .preparingRebalance, !initialDelayActive, allMembersJoined else { return [] }
        return completeJoin(now: now)
    }

    /// The protocol for the next generation: among those every member supports, the one most
    /// members prefer (ties go to the earliest in the first member's order).
    func selectProtocol() -> String? {
        guard let first = members.first else { return nil }
        let candidates = first.protocols.map(\.name).filter { name in members.allSatisfy { $0.protocols.contains { $0.name == name } } }
        guard !candidates.isEmpty else { return nil }
        var votes = Array(repeating: 0, count: candidates.count)
        for member in members {
            if let choice = member.protocols.first(where: { candidates.contains($0.name) }), let slot = candidates.firstIndex(of: choice.name) {
                votes[slot] += 1
            }
        }
        var best = 0
        for slot in votes.indices where votes[slot] > votes[best] { best = slot }
        return candidates[best]
    }

    mutating func completeJoin(now: Int64) -> [GroupAction] {
        var actions: [GroupAction] = []
        // Dynamic members that did not rejoin in time are out; static ones keep their place.
        for member in members where member.joinToken == nil && member.groupInstanceId == nil {
            dropMember(member.memberId)
        }
        if !members.isEmpty, leaderId.flatMap(member)?.joinToken == nil {
            guard let joined = members.first(where: { $0.joinToken != nil }) else {
                // Only static members that have not rejoined: wait another rebalance timeout for them.
                joinDeadline = now + Int64(members.map(\.rebalanceTimeoutMs).max() ?? 0)
                return []
            }
            leaderId = joined.memberId
        }
        generationId &+= 1
        joinDeadline = nil
        initialDelayActive = false
        newMemberAdded = false
        if members.isEmpty {
            protocolName = nil
            transition(to: .empty, now: now)
            return [.store(.emptyGeneration(generation: generationId))]
        }
        protocolName = selectProtocol()
        transition(to: .completingRebalance, now: now)
        let all = currentMemberMetadata()
        for index in members.indices {
            guard let token = members[index].joinToken else { continue }
            var outcome = currentJoinOutcome(for: members[index].memberId, includeMembers: false)
            if isLeader(members[index].memberId) { outcome.members = all }
            actions.append(.joinResponse(token: token, outcome))
            members[index].joinToken = nil
            members[index].isNew = false
            heartbeat(index, now: now)
        }
        return actions
    }

    /// Removes a member without starting a rebalance (the caller decides).
    mutating func dropMember(_ memberId: String) {
        guard let index = memberIndex(memberId) else { return }
        let member = members.remove(at: index)
        if let instanceId = member.groupInstanceId, staticMembers[instanceId] == memberId { staticMembers[instanceId] = nil }
        if leaderId == memberId { leaderId = members.first?.memberId }
    }

    /// Removes a member (it left or its session expired) and rebalances the rest.
    mutating func removeMember(_ memberId: String, error: KafkaErrorCode, now: Int64) -> [GroupAction] {
        guard let index = memberIndex(memberId) else { return [] }
        var actions: [GroupAction] = []
        if let token = members[index].joinToken { actions.append(.joinResponse(token: token, JoinOutcome(error: error, memberId: memberId))) }
        if let token = members[index].syncToken { actions.append(.syncResponse(token: token, SyncOutcome(error: error))) }
        dropMember(memberId)
        switch state {
        case .dead, .empty: break
        case .stable, .completingRebalance: actions += maybePrepareRebalance(now: now)
        case .preparingRebalance: actions += tryCompleteJoin(now: now)
        }
        return actions
    }
}
