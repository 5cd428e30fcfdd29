import KafkaProtocol

/// One consumer group of the next-generation protocol (KIP-848), a deterministic state machine:
/// every step takes the time and the topic catalog explicitly and reports whether the stored form
/// changed, so the driver writes it to `__consumer_offsets` before it answers.
///
/// The coordinator assigns: a change of membership, subscriptions or subscribed topics bumps the
/// group epoch; the next heartbeat computes a target assignment at that epoch with a server-side
/// assignor; each member then reconciles towards its target on its own heartbeats. A member first
/// revokes what its target no longer holds (it stays at its epoch meanwhile), then moves to the new
/// epoch and gets the new partitions that no other member still holds. Nobody stops for anybody.
public struct ConsumerGroup: Sendable {
    /// The group's state as ConsumerGroupDescribe and ListGroups show it.
    public enum State: String, Sendable, Hashable {
        case empty = "Empty"
        case assigning = "Assigning"
        case reconciling = "Reconciling"
        case stable = "Stable"
    }

    /// The member epoch of a static member that left saying it will come back.
    public static let staticLeaveEpoch: Int32 = -2
    /// The member epoch of a member that leaves.
    public static let leaveEpoch: Int32 = -1

    public let groupId: String
    public let config: GroupConfig
    public internal(set) var groupEpoch: Int32 = 0
    public internal(set) var assignmentEpoch: Int32 = 0
    public internal(set) var members: [String: ConsumerGroupMember] = [:]
    public internal(set) var targetAssignment: [String: MemberAssignment] = [:]
    /// The subscribed topics the current target was computed from, by name.
    public internal(set) var subscriptionMetadata: [String: TopicCatalog.Topic] = [:]
    /// Who holds each partition (assigned or still revoking): a partition goes to its next member only once free.
    var owners: [TopicIdPartition: String] = [:]
    var staticMembers: [String: String] = [:]
    var regexMatches: [String: (version: UInt64, names: [String])] = [:]
    /// Member ids handed to classic members with MEMBER_ID_REQUIRED, not yet used.
    var pendingClassicMembers: Set<String> = []
    /// Set by every change of the stored form; `takeChanged()` reads and clears it.
    var changed = false

    public init(groupId: String, config: GroupConfig = GroupConfig()) {
        self.groupId = groupId
        self.config = config
    }

    // MARK: Queries

    public var state: State {
        if members.isEmpty { return .empty }
        if groupEpoch > assignmentEpoch { return .assigning }
        let settled = members.values.allSatisfy {
            $0.memberEpoch == Self.staticLeaveEpoch || ($0.memberEpoch == assignmentEpoch && $0.state == .stable)
        }
        return settled ? .stable : .reconciling
    }

    /// The assignor the group uses: the one most members ask for, else the default.
    public var assignorName: String {
        var votes: [String: Int] = [:]
        for member in members.values { if let name = member.serverAssignor { votes[name, default: 0] += 1 } }
        return votes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.first?.key ?? ServerAssignors.defaultName
    }

    /// The earliest session or revocation deadline, for the driver's timer.
    public var nextDeadline: Int64? {
        members.values.flatMap { [$0.sessionDeadline] + ($0.revocationDeadline.map { [$0] } ?? []) }.min()
    }

    /// The heartbeat interval members are given while the group is not stable: a fifth of the
    /// usual one (at least 50 ms), so a revocation, and the hand-over of the partition it frees, is
    /// learned of within a fraction of the interval instead of one interval each.
    public var reconcilingHeartbeatIntervalMs: Int32 {
        min(config.consumerHeartbeatIntervalMs, max(50, config.consumerHeartbeatIntervalMs / 5))
    }

    /// Topic names the group subscribes to by name or through a regular expression (resolved at the last step).
    public var subscribedTopicNames: Set<String> { Set(subscriptionMetadata.keys) }

    public mutating func takeChanged() -> Bool {
        defer { changed = false }
        return changed
    }

    // MARK: Heartbeat

    /// A ConsumerGroupHeartbeat. `newMemberId` is the id for a joining member that brings none (v0).
    public mutating func heartbeat(_ request: ConsumerHeartbeat, newMemberId: String, catalog: TopicCatalog, now: Int64) -> ConsumerHeartbeatOutcome {
        if let invalid = Self.validate(request) { return invalid }
        switch request.memberEpoch {
        case Self.leaveEpoch:
            return leave(request)
        case Self.staticLeaveEpoch:
            return staticLeave(request, now: now)
        case 0:
            return join(request, newMemberId: newMemberId, catalog: catalog, now: now)
        default:
            guard var member = members[request.memberId] else {
                return ConsumerHeartbeatOutcome(error: .unknownMemberId, message: "member \(request.memberId) is not in group \(groupId)")
            }
            if request.memberEpoch != member.memberEpoch {
                let previousWithOwned = request.memberEpoch == member.previousMemberEpoch && request.ownedPartitions.map {
                    Assignments.isSubset(Assignments.make($0), of: member.assigned)
                } == true
                guard previousWithOwned else {
                    return ConsumerHeartbeatOutcome(
                        error: .fencedMemberEpoch, message: "epoch \(request.memberEpoch) of member \(request.memberId) is fenced (current \(member.memberEpoch))")
                }
            }
            if let instanceId = request.instanceId, instanceId != member.instanceId {
                return ConsumerHeartbeatOutcome(error: .fencedInstanceId, message: "member \(request.memberId) has another instance id")
            }
            member.sessionDeadline = now + member.sessionTimeoutMs(config)
            members[request.memberId] = member
            return advance(request.memberId, request, fullAssignment: request.ownedPartitions != nil, catalog: catalog, now: now)
        }
    }

    static func validate(_ request: ConsumerHeartbeat) -> ConsumerHeartbeatOutcome? {
        func invalid(_ message: String) -> ConsumerHeartbeatOutcome { ConsumerHeartbeatOutcome(error: .invalidRequest, message: message) }
        if request.memberEpoch < staticLeaveEpoch { return invalid("MemberEpoch \(request.memberEpoch) is invalid.") }
        if request.instanceId?.isEmpty == true { return invalid("InstanceId can't be empty.") }
        if request.memberEpoch != 0 && request.memberId.isEmpty { return invalid("MemberId can't be empty.") }
        if request.memberEpoch == staticLeaveEpoch && request.instanceId == nil { return invalid("InstanceId can't be null when leaving with epoch -2.") }
        if request.memberEpoch == 0 {
            if request.rebalanceTimeoutMs == -1 { return invalid("RebalanceTimeoutMs must be provided in first request.") }
            if request.ownedPartitions?.isEmpty != true { return invalid("TopicPartitions must be empty when (re-)joining.") }
            if request.subscribedTopicNames == nil && request.subscribedTopicRegex == nil {
                return invalid("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.")
            }
        }
        if request.rebalanceTimeoutMs < -1 { return invalid("RebalanceTimeoutMs \(request.rebalanceTimeoutMs) is invalid.") }
        if let name = request.serverAssignor, ServerAssignors.named(name) == nil {
            return ConsumerHeartbeatOutcome(error: .unsupportedAssignor, message: "ServerAssignor \(name) is not supported; supported: uniform, range.")
        }
        if let regex = request.subscribedTopicRegex, !regex.isEmpty, (try? Regex(regex)) == nil {
            return ConsumerHeartbeatOutcome(error: .invalidRegularExpression, message: "SubscribedTopicRegex \(regex) is not a valid regular expression.")
        }
        return nil
    }

    mutating func join(_ request: ConsumerHeartbeat, newMemberId: String, catalog: TopicCatalog, now: Int64) -> ConsumerHeartbeatOutcome {
        let memberId = request.memberId.isEmpty ? newMemberId : request.memberId
        if let instanceId = request.instanceId, let existing = staticMembers[instanceId], existing != memberId, let old = members[existing] {
            guard old.memberEpoch == Self.staticLeaveEpoch else {
                return ConsumerHeartbeatOutcome(
                    error: .unreleasedInstanceId, message: "instance id \(instanceId) is still used by member \(existing)", memberId: memberId)
            }
            // The static member comes back under a new member id: it takes over its old self's
            // assignment and epoch, and the group does not rebalance.
            replaceStaticMember(existing, by: memberId, instanceId: instanceId, epoch: old.previousMemberEpoch)
        }
        if var member = members[memberId] {
            // A rejoin owns nothing: what it was revoking is free now.
            release(member.pendingRevocation, from: memberId)
            member.pendingRevocation = [:]
            if member.state == .unrevokedPartitions { member.state = .stable }
            member.revocationDeadline = nil
            members[memberId] = member
        } else {
            // Its subscription, new to the group, bumps the group epoch in `advance`.
            members[memberId] = ConsumerGroupMember(memberId: memberId, instanceId: request.instanceId, memberEpoch: 0, previousMemberEpoch: -1)
            if let instanceId = request.instanceId { staticMembers[instanceId] = memberId }
            changed = true
        }
        members[memberId]?.sessionDeadline = now + Int64(config.consumerSessionTimeoutMs)
        return advance(memberId, request, fullAssignment: true, catalog: catalog, now: now)
    }

    /// The common part of a join and a heartbeat: take the request's changes, bring the target up to
    /// date, reconcile the member and answer.
    mutating func advance(_ memberId: String, _ request: ConsumerHeartbeat, fullAssignment: Bool, catalog: TopicCatalog, now: Int64) -> ConsumerHeartbeatOutcome {
        guard var member = members[memberId] else { return ConsumerHeartbeatOutcome(error: .unknownMemberId) }
        let before = member.persisted
        var subscriptionChanged = before.memberEpoch == 0 && before.previousMemberEpoch == -1 && before.assigned.isEmpty
        if let names = request.subscribedTopicNames {
            let sorted = Array(Set(names)).sorted()
            if sorted != member.subscribedTopicNames { subscriptionChanged = true }
            member.subscribedTopicNames = sorted
        }
        if let regex = request.subscribedTopicRegex {
            let value = regex.isEmpty ? nil : regex
            if value != member.subscribedTopicRegex { subscriptionChanged = true }
            member.subscribedTopicRegex = value
        }
        if let assignor = request.serverAssignor { member.serverAssignor = assignor }
        if let rack = request.rackId { member.rackId = rack }
        if request.rebalanceTimeoutMs >= 0 { member.rebalanceTimeoutMs = request.rebalanceTimeoutMs }
        if !request.clientId.isEmpty { member.clientId = request.clientId }
        if !request.clientHost.isEmpty { member.clientHost = request.clientHost }
        if member.persisted != before { changed = true }
        members[memberId] = member
        // One bump per step, however many reasons.
        if refreshSubscriptionMetadata(catalog) || subscriptionChanged {
            groupEpoch += 1
            changed = true
        }
        if groupEpoch > assignmentEpoch { computeTargetAssignment() }
        let assignedBefore = members[memberId]?.assigned
        reconcile(memberId, owned: request.ownedPartitions, now: now)
        guard let updated = members[memberId] else { return ConsumerHeartbeatOutcome(error: .unknownMemberId) }
        var outcome = ConsumerHeartbeatOutcome(error: .none, memberId: memberId)
        outcome.memberEpoch = updated.memberEpoch
        outcome.heartbeatIntervalMs = state == .stable ? config.consumerHeartbeatIntervalMs : reconcilingHeartbeatIntervalMs
        if fullAssignment || updated.assigned != assignedBefore || updated.memberEpoch != before.memberEpoch {
            outcome.assignment = updated.assigned
        }
        return outcome
    }

    mutating func leave(_ request: ConsumerHeartbeat) -> ConsumerHeartbeatOutcome {
        var outcome = ConsumerHeartbeatOutcome(error: .none, memberId: request.memberId)
        outcome.memberEpoch = Self.leaveEpoch
        let memberId = request.instanceId.flatMap { staticMembers[$0] } ?? request.memberId
        guard members[memberId] != nil else {
            return ConsumerHeartbeatOutcome(error: .unknownMemberId, message: "member \(request.memberId) is not in group \(groupId)")
        }
        if let instanceId = request.instanceId, staticMembers[instanceId] != request.memberId {
            return ConsumerHeartbeatOutcome(error: .fencedInstanceId, message: "instance id \(instanceId) belongs to another member")
        }
        remove(memberId)
        return outcome
    }

    mutating func staticLeave(_ request: ConsumerHeartbeat, now: Int64) -> ConsumerHeartbeatOutcome {
        guard let instanceId = request.instanceId, let memberId = staticMembers[instanceId], var member = members[memberId] else {
            return ConsumerHeartbeatOutcome(error: .unknownMemberId, message: "no static member with this instance id in group \(groupId)")
        }
        guard memberId == request.memberId else {
            return ConsumerHeartbeatOutcome(error: .fencedInstanceId, message: "instance id \(instanceId) belongs to another member")
        }
        // It keeps its partitions for one session timeout, so coming back costs no rebalance.
        if member.memberEpoch != Self.staticLeaveEpoch {
            member.previousMemberEpoch = member.memberEpoch
            member.memberEpoch = Self.staticLeaveEpoch
        }
        member.sessionDeadline = now + member.sessionTimeoutMs(config)
        member.revocationDeadline = nil
        members[memberId] = member
        changed = true
        var outcome = ConsumerHeartbeatOutcome(error: .none, memberId: memberId)
        outcome.memberEpoch = Self.staticLeaveEpoch
        return outcome
    }

    // MARK: Time

    /// Removes members whose session expired or who did not revoke within their rebalance timeout.
    /// Returns the removed member ids, sorted.
    public mutating func expire(now: Int64) -> [String] {
        var removed: [String] = []
        for memberId in members.keys.sorted() {
            guard let member = members[memberId] else { continue }
            let revocationLate = member.state == .unrevokedPartitions && (member.revocationDeadline.map { $0 <= now } ?? false)
            if member.sessionDeadline <= now || revocationLate {
                remove(memberId)
                removed.append(memberId)
            }
        }
        return removed
    }

    /// Restarts every session at `now` (a coordinator that just loaded the group).
    mutating func restartSessions(now: Int64) {
        for memberId in members.keys.sorted() {
            if let member = members[memberId] { members[memberId]?.sessionDeadline = now + member.sessionTimeoutMs(config) }
            if members[memberId]?.state == .unrevokedPartitions, let timeout = members[memberId]?.rebalanceTimeoutMs {
                members[memberId]?.revocationDeadline = now + Int64(timeout)
            }
        }
    }

    // MARK: Membership changes

    mutating func remove(_ memberId: String) {
        guard let member = members.removeValue(forKey: memberId) else { return }
        targetAssignment[memberId] = nil
        for (partition, owner) in owners where owner == memberId { owners[partition] = nil }
        if let instanceId = member.instanceId, staticMembers[instanceId] == memberId { staticMembers[instanceId] = nil }
        groupEpoch += 1
        changed = true
    }

    /// A static member's new member id takes over the old one's place: assignment, target, epoch.
    mutating func replaceStaticMember(_ oldId: String, by newId: String, instanceId: String, epoch: Int32) {
        guard var replacement = members.removeValue(forKey: oldId) else { return }
        replacement.memberId = newId
        replacement.memberEpoch = epoch
        targetAssignment[newId] = targetAssignment.removeValue(forKey: oldId)
        for (partition, owner) in owners where owner == oldId { owners[partition] = newId }
        members[newId] = replacement
        staticMembers[instanceId] = newId
        changed = true
    }

    mutating func release(_ partitions: MemberAssignment, from memberId: String) {
        for partition in Assignments.partitions(partitions) where owners[partition] == memberId { owners[partition] = nil }
    }

    /// The topics a member subscribes to that exist, by name and through its regular expression.
    mutating func resolvedTopics(of member: ConsumerGroupMember, catalog: TopicCatalog) -> [String] {
        var names = member.subscribedTopicNames.filter { catalog.byName[$0] != nil }
        if let pattern = member.subscribedTopicRegex {
            if let cached = regexMatches[pattern], cached.version == catalog.version {
                names += cached.names
            } else {
                let matches = (try? Regex(pattern)).map { regex in catalog.matchableNames.filter { $0.wholeMatch(of: regex) != nil } } ?? []
                regexMatches[pattern] = (catalog.version, matches)
                names += matches
            }
        }
        return names
    }

    /// Re-resolves every subscription; true when a topic was created, deleted or grown (the group epoch must move).
    mutating func refreshSubscriptionMetadata(_ catalog: TopicCatalog) -> Bool {
        var metadata: [String: TopicCatalog.Topic] = [:]
        for memberId in members.keys.sorted() {
            guard let member = members[memberId] else { continue }
            for name in resolvedTopics(of: member, catalog: catalog) { metadata[name] = catalog.byName[name] }
        }
        guard metadata != subscriptionMetadata else { return false }
        subscriptionMetadata = metadata
        return true
    }

    mutating func computeTargetAssignment() {
        let assignor = ServerAssignors.named(assignorName) ?? ServerAssignors.named(ServerAssignors.defaultName)!
        let idsByName = subscriptionMetadata.mapValues(\.id)
        var specMembers: [AssignmentSpec.Member] = []
        for memberId in members.keys.sorted() {
            guard let member = members[memberId] else { continue }
            var names = Set(member.subscribedTopicNames)
            if let pattern = member.subscribedTopicRegex { names.formUnion(regexMatches[pattern]?.names ?? []) }
            specMembers.append(
                AssignmentSpec.Member(
                    memberId: memberId, instanceId: member.instanceId, rackId: member.rackId,
                    subscribedTopicIds: Set(names.compactMap { idsByName[$0] }), currentAssignment: targetAssignment[memberId] ?? [:]))
        }
        var counts: [KafkaUUID: Int32] = [:]
        for topic in subscriptionMetadata.values { counts[topic.id] = topic.partitionCount }
        let result = assignor.assign(AssignmentSpec(members: specMembers, partitionCounts: counts))
        targetAssignment = Dictionary(uniqueKeysWithValues: members.keys.map { ($0, Assignments.normalized(result[$0] ?? [:])) })
        assignmentEpoch = groupEpoch
        changed = true
    }

    /// Moves one member towards its target: revoke first, then take the epoch and what is free.
    mutating func reconcile(_ memberId: String, owned: [TopicIdPartition]?, now: Int64) {
        guard var member = members[memberId], member.memberEpoch >= 0 else { return }
        let before = member.persisted
        defer {
            members[memberId] = member
            if member.persisted != before { changed = true }
        }
        if member.state == .unrevokedPartitions {
            guard let owned, !Assignments.partitions(member.pendingRevocation).contains(where: Set(owned).contains) else { return }
            release(member.pendingRevocation, from: memberId)
            member.pendingRevocation = [:]
            member.state = .stable
            member.revocationDeadline = nil
        }
        if member.state == .stable && member.memberEpoch == assignmentEpoch { return }
        let target = targetAssignment[memberId] ?? [:]
        let revoke = Assignments.subtracting(member.assigned, target)
        if !revoke.isEmpty {
            member.assigned = Assignments.intersection(member.assigned, target)
            member.pendingRevocation = revoke
            member.state = .unrevokedPartitions
            member.revocationDeadline = now + Int64(member.rebalanceTimeoutMs)
            return
        }
        var unreleased = false
        for partition in Assignments.partitions(Assignments.subtracting(target, member.assigned)) {
            if let owner = owners[partition], owner != memberId {
                unreleased = true
            } else {
                owners[partition] = memberId
                member.assigned[partition.topicId, default: []].insert(partition.partition)
            }
        }
        if member.memberEpoch != assignmentEpoch {
            member.previousMemberEpoch = member.memberEpoch
            member.memberEpoch = assignmentEpoch
        }
        member.state = unreleased ? .unreleasedPartitions : .stable
    }
}
