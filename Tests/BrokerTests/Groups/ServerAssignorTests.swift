@testable import BrokerCore
import KafkaProtocol
import Testing
import TestKit

typealias SpecMember = AssignmentSpec.Member

/// Checks shared by the assignor tests: what every assignment must satisfy, and how much moved.
enum AssignmentChecks {
    static func topic(_ n: UInt64) -> KafkaUUID { KafkaUUID(high: n % 3, low: 1_000 - n) }

    static func member(_ id: String, _ topics: [KafkaUUID], _ current: MemberAssignment = [:]) -> SpecMember {
        SpecMember(memberId: id, subscribedTopicIds: Set(topics), currentAssignment: current)
    }

    /// Every member appears; every partition of a subscribed topic has exactly one owner, a
    /// subscriber; nothing else is handed out.
    static func checkValid(_ spec: AssignmentSpec, _ result: [String: MemberAssignment], _ context: String) {
        #expect(Set(result.keys) == Set(spec.members.map(\.memberId)), "\(context): member ids")
        var owners: [KafkaUUID: [Int32: Int]] = [:]
        for member in spec.members {
            for (topic, partitions) in result[member.memberId] ?? [:] {
                #expect(member.subscribedTopicIds.contains(topic), "\(context): \(member.memberId) got unsubscribed \(topic)")
                #expect(!partitions.isEmpty, "\(context): empty partition set for \(topic)")
                for partition in partitions {
                    #expect(partition >= 0 && partition < spec.partitionCounts[topic] ?? 0, "\(context): \(topic)-\(partition) does not exist")
                    owners[topic, default: [:]][partition, default: 0] += 1
                }
            }
        }
        let subscribed = Set(spec.members.flatMap(\.subscribedTopicIds))
        for topic in subscribed {
            let count = spec.partitionCounts[topic] ?? 0
            #expect(owners[topic, default: [:]].count == Int(count), "\(context): \(topic) coverage")
            #expect(owners[topic, default: [:]].values.allSatisfy { $0 == 1 }, "\(context): \(topic) owned once")
        }
    }

    static func loads(_ result: [String: MemberAssignment]) -> [String: Int] {
        result.mapValues { $0.values.reduce(0) { $0 + $1.count } }
    }

    /// No partition could go from its owner to a subscriber of its topic owning two or more fewer.
    static func checkBalanced(_ spec: AssignmentSpec, _ result: [String: MemberAssignment], _ context: String) {
        let load = loads(result)
        for topic in Set(spec.members.flatMap(\.subscribedTopicIds)) {
            let subscribers = spec.members.filter { $0.subscribedTopicIds.contains(topic) }.map(\.memberId)
            let holders = subscribers.filter { result[$0]?[topic] != nil }
            guard let most = holders.map({ load[$0]! }).max(), let least = subscribers.map({ load[$0]! }).min() else { continue }
            #expect(most <= least + 1, "\(context): \(topic) held by a member with \(most) while a subscriber has \(least)")
        }
    }

    /// Partitions whose owner is the member that had them in its current assignment.
    static func kept(_ spec: AssignmentSpec, _ result: [String: MemberAssignment]) -> Int {
        spec.members.reduce(0) { sum, member in
            sum + member.currentAssignment.reduce(0) { $0 + $1.value.intersection(result[member.memberId]?[$1.key] ?? []).count }
        }
    }

    /// The most partitions any balanced assignment of a homogeneous group keeps in place, given the
    /// (valid, disjoint) current assignments: the `total % n` larger quotas go to the largest holders.
    static func mostKeepable(currentLoads: [Int], total: Int) -> Int {
        guard !currentLoads.isEmpty else { return 0 }
        let base = total / currentLoads.count, extras = total % currentLoads.count
        return currentLoads.sorted(by: >).enumerated().reduce(0) { $0 + min($1.element, base + ($1.offset < extras ? 1 : 0)) }
    }

    /// A random group: up to 12 members over up to 6 topics (some of them empty), homogeneous or
    /// not, with current assignments that may be stale, overlapping or out of range.
    static func randomSpec(_ random: inout SeededRandom, homogeneous: Bool) -> AssignmentSpec {
        let topics = (0..<UInt64(random.between(1, 6))).map { topic($0) }
        var counts: [KafkaUUID: Int32] = [:]
        for topic in topics { counts[topic] = random.chance(100) ? 0 : random.between(1, 24) }
        let shared = topics.filter { _ in random.chance(700) }
        let members = (0..<random.between(0, 12)).map { index -> SpecMember in
            let subscribed = homogeneous ? shared : topics.filter { _ in random.chance(500) }
            var current: MemberAssignment = [:]
            for topic in topics + [topic(99)] where random.chance(400) {
                current[topic] = Set((0..<random.between(1, 6)).map { _ in Int32(random.between(0, 26)) })
            }
            return member("m\(random.below(1_000))-\(index)", subscribed, current)
        }
        return AssignmentSpec(members: members, partitionCounts: counts)
    }

    static func shuffled(_ spec: AssignmentSpec, _ random: inout SeededRandom) -> AssignmentSpec {
        AssignmentSpec(members: spec.members.shuffled(using: &random), partitionCounts: spec.partitionCounts)
    }

    /// `spec` with each member's current assignment replaced by its part of `result`.
    static func withCurrent(_ spec: AssignmentSpec, _ result: [String: MemberAssignment]) -> AssignmentSpec {
        var spec = spec
        for index in spec.members.indices { spec.members[index].currentAssignment = result[spec.members[index].memberId] ?? [:] }
        return spec
    }
}

@Suite struct ServerAssignorTests {
    typealias C = AssignmentChecks
    static let uniform = UniformAssignor()
    static let range = RangeAssignor()

    @Test func namedFindsBothAssignors() {
        #expect(ServerAssignors.defaultName == "uniform")
        #expect(ServerAssignors.all.map(\.name) == ["uniform", "range"])
        #expect(ServerAssignors.named("uniform") is UniformAssignor)
        #expect(ServerAssignors.named("range") is RangeAssignor)
        #expect(ServerAssignors.named(ServerAssignors.defaultName)?.name == "uniform")
        #expect(ServerAssignors.named("sticky") == nil)
        #expect(ServerAssignors.named("Uniform") == nil)
    }

    @Test(arguments: UInt64(1)...300) func randomSpecsAreValidBalancedAndDeterministic(_ seed: UInt64) {
        var random = SeededRandom(seed: seed)
        let spec = C.randomSpec(&random, homogeneous: seed % 2 == 0)
        let context = "seed \(seed)"
        for assignor in ServerAssignors.all {
            let result = assignor.assign(spec)
            C.checkValid(spec, result, "\(context) \(assignor.name)")
            #expect(assignor.assign(C.shuffled(spec, &random)) == result, "\(context) \(assignor.name): member order matters")
        }
        let result = Self.uniform.assign(spec)
        C.checkBalanced(spec, result, context)
        let active = spec.members.filter { !$0.subscribedTopicIds.filter { spec.partitionCounts[$0]! > 0 }.isEmpty }
        let loads = active.map { C.loads(result)[$0.memberId]! }
        if seed % 2 == 0, let most = loads.max(), let least = loads.min() {
            #expect(most - least <= 1, "\(context): homogeneous loads \(loads)")
        }
        // A balanced target is a fixed point: assigning again from it moves nothing.
        let again = C.withCurrent(spec, result)
        #expect(Self.uniform.assign(again) == result, "\(context): not stable")
    }

    /// In a homogeneous group, members joining, leaving and partitions appearing move only as many
    /// partitions as balance requires.
    @Test(arguments: UInt64(1)...200) func homogeneousChangesMoveTheMinimum(_ seed: UInt64) {
        var random = SeededRandom(seed: seed)
        let topics = (0..<UInt64(random.between(1, 4))).map { C.topic($0) }
        var counts: [KafkaUUID: Int32] = [:]
        for topic in topics { counts[topic] = random.between(1, 40) }
        var members = (0..<random.between(1, 10)).map { C.member("m\(random.below(100))-\($0)", topics) }
        // The group starts lopsided: each partition with a random member or none.
        var previous: [String: MemberAssignment] = [:]
        for topic in topics {
            for partition in 0..<counts[topic]! where random.chance(800) {
                previous[random.pick(members)!.memberId, default: [:]][topic, default: []].insert(partition)
            }
        }
        for step in 0..<8 {
            let before = previous
            switch random.below(4) {
            case 0: members.append(C.member("n\(random.below(100))-\(step)", topics))
            case 1 where members.count > 1: members.remove(at: random.below(members.count))
            default: counts[random.pick(topics)!]! += random.between(1, 5)
            }
            let spec = C.withCurrent(AssignmentSpec(members: members, partitionCounts: counts), before)
            let result = Self.uniform.assign(spec)
            let context = "seed \(seed) step \(step)"
            C.checkValid(spec, result, context)
            let loads = C.loads(result).values
            #expect(loads.max()! - loads.min()! <= 1, "\(context): loads \(loads.sorted())")
            let currentLoads = members.map { C.loads(before)[$0.memberId] ?? 0 }
            let total = Int(counts.values.reduce(0, +))
            #expect(C.kept(spec, result) == C.mostKeepable(currentLoads: currentLoads, total: total), "\(context): moved too much")
            previous = result
        }
    }

    @Test func joiningMemberTakesOnlyItsShare() {
        let t = C.topic(1)
        let old = (0..<3).map { C.member("m\($0)", [t]) }
        let before = Self.uniform.assign(AssignmentSpec(members: old, partitionCounts: [t: 12]))
        #expect(C.loads(before) == ["m0": 4, "m1": 4, "m2": 4])
        let spec = C.withCurrent(AssignmentSpec(members: old + [C.member("new", [t])], partitionCounts: [t: 12]), before)
        let after = Self.uniform.assign(spec)
        #expect(C.loads(after) == ["m0": 3, "m1": 3, "m2": 3, "new": 3])
        for id in ["m0", "m1", "m2"] { #expect(after[id]![t]!.isSubset(of: before[id]![t]!)) }
        #expect(C.kept(spec, after) == 9)
    }

    @Test func leavingMemberHandsOnlyItsOwnPartitions() {
        let t1 = C.topic(1), t2 = C.topic(2)
        let members = (0..<4).map { C.member("m\($0)", [t1, t2]) }
        let counts: [KafkaUUID: Int32] = [t1: 7, t2: 6]
        let before = Self.uniform.assign(AssignmentSpec(members: members, partitionCounts: counts))
        let spec = C.withCurrent(AssignmentSpec(members: [members[0], members[2], members[3]], partitionCounts: counts), before)
        let after = Self.uniform.assign(spec)
        for id in ["m0", "m2", "m3"] {
            for (topic, partitions) in before[id]! { #expect(partitions.isSubset(of: after[id]![topic] ?? [])) }
        }
        #expect(C.loads(after).values.sorted() == [4, 4, 5])
    }

    @Test func heterogeneousSubscriptionsBalanceAsFarAsTheyCan() {
        let t1 = C.topic(1), t2 = C.topic(2)
        // A bridge member between two topics evens out members that each see one.
        let bridged = AssignmentSpec(
            members: [C.member("a", [t1]), C.member("b", [t1, t2]), C.member("c", [t2])], partitionCounts: [t1: 6, t2: 6])
        let result = Self.uniform.assign(bridged)
        C.checkValid(bridged, result, "bridged")
        #expect(C.loads(result) == ["a": 4, "b": 4, "c": 4])
        // A member of a small topic cannot be given more than that topic has.
        let small = AssignmentSpec(
            members: [C.member("a", [t1]), C.member("b", [t1, t2]), C.member("c", [t1, t2])], partitionCounts: [t1: 2, t2: 10])
        let smallResult = Self.uniform.assign(small)
        C.checkValid(small, smallResult, "small")
        #expect(C.loads(smallResult) == ["a": 2, "b": 5, "c": 5])
        #expect(smallResult["a"] == [t1: [0, 1]])
    }

    @Test func heterogeneousJoinMovesOnlyWhatTheNewcomerNeeds() {
        let t1 = C.topic(1), t2 = C.topic(2)
        let current: [String: MemberAssignment] = ["a": [t1: [0, 1, 2], t2: [0, 1, 2]], "b": [t1: [3, 4, 5], t2: [3, 4, 5]]]
        let members = [C.member("a", [t1, t2], current["a"]!), C.member("b", [t1, t2], current["b"]!), C.member("c", [t1])]
        let spec = AssignmentSpec(members: members, partitionCounts: [t1: 6, t2: 6])
        let result = Self.uniform.assign(spec)
        C.checkValid(spec, result, "join")
        #expect(C.loads(result) == ["a": 4, "b": 4, "c": 4])
        #expect(C.kept(spec, result) == 8)
        #expect(result["a"]![t2] == [0, 1, 2] && result["b"]![t2] == [3, 4, 5])
    }

    @Test func heterogeneousLeaveKeepsSurvivorsInPlace() {
        let t1 = C.topic(1), t2 = C.topic(2)
        let members = [C.member("a", [t1]), C.member("b", [t1, t2]), C.member("c", [t2]), C.member("d", [t1, t2])]
        let counts: [KafkaUUID: Int32] = [t1: 8, t2: 8]
        let before: [String: MemberAssignment] = [
            "a": [t1: [0, 1, 2, 3]], "b": [t1: [4, 5], t2: [0, 1]], "c": [t2: [2, 3, 4, 5]], "d": [t1: [6, 7], t2: [6, 7]],
        ]
        #expect(Self.uniform.assign(C.withCurrent(AssignmentSpec(members: members, partitionCounts: counts), before)) == before)
        let spec = C.withCurrent(AssignmentSpec(members: Array(members.dropLast()), partitionCounts: counts), before)
        let after = Self.uniform.assign(spec)
        C.checkValid(spec, after, "leave")
        C.checkBalanced(spec, after, "leave")
        #expect(C.kept(spec, after) == 12)
    }

    @Test func deletedTopicsAndAddedPartitions() {
        let t1 = C.topic(1), t2 = C.topic(2)
        let members = (0..<3).map { C.member("m\($0)", [t1, t2]) }
        let before = Self.uniform.assign(AssignmentSpec(members: members, partitionCounts: [t1: 6, t2: 3]))
        // t2 is gone: members no longer subscribe to it and their assignments still mention it.
        let deleted = C.withCurrent(
            AssignmentSpec(members: members.map { C.member($0.memberId, [t1]) }, partitionCounts: [t1: 6]), before)
        let afterDelete = Self.uniform.assign(deleted)
        C.checkValid(deleted, afterDelete, "delete")
        #expect(afterDelete.values.allSatisfy { $0[t2] == nil && $0[t1]?.count == 2 })
        // t1 grows from 6 to 9: the old partitions stay, the three new ones spread one each.
        let grown = C.withCurrent(AssignmentSpec(members: members, partitionCounts: [t1: 9, t2: 3]), before)
        let afterGrowth = Self.uniform.assign(grown)
        C.checkValid(grown, afterGrowth, "growth")
        #expect(C.kept(grown, afterGrowth) == 9)
        #expect(C.loads(afterGrowth).values.allSatisfy { $0 == 4 })
        // Shrinking a topic (not something Kafka allows, but a stale assignment may claim it) drops the extra partitions.
        let stale = C.withCurrent(AssignmentSpec(members: members, partitionCounts: [t1: 3, t2: 3]), before)
        C.checkValid(stale, Self.uniform.assign(stale), "stale")
    }

    @Test func emptyGroupsAndMembersWithoutTopics() {
        let t = C.topic(1)
        for assignor in ServerAssignors.all {
            #expect(assignor.assign(AssignmentSpec(members: [], partitionCounts: [t: 3])).isEmpty)
            let idle = AssignmentSpec(members: [C.member("a", []), C.member("b", [], [t: [0]])], partitionCounts: [t: 3])
            #expect(assignor.assign(idle) == ["a": [:], "b": [:]])
            // An idle member neither gets partitions nor dilutes the others' shares.
            let mixed = AssignmentSpec(members: [C.member("a", []), C.member("b", [t]), C.member("c", [t])], partitionCounts: [t: 4])
            #expect(C.loads(assignor.assign(mixed)) == ["a": 0, "b": 2, "c": 2])
            // A topic with no partitions, or none known, hands out nothing.
            let empty = AssignmentSpec(members: [C.member("a", [t, C.topic(2)])], partitionCounts: [t: 0])
            #expect(assignor.assign(empty) == ["a": [:]])
        }
    }

    @Test func staleAndOverlappingCurrentAssignmentsAreCleanedUp() {
        let t1 = C.topic(1), t2 = C.topic(2), gone = C.topic(9)
        let members = [
            C.member("a", [t1], [t1: [0, 1, 2, 3, 17, -1], t2: [0], gone: [0]]),
            C.member("b", [t1, t2], [t1: [0, 1]]),
        ]
        let spec = AssignmentSpec(members: members, partitionCounts: [t1: 4, t2: 2])
        let result = Self.uniform.assign(spec)
        C.checkValid(spec, result, "stale")
        C.checkBalanced(spec, result, "stale")
        #expect(C.loads(result) == ["a": 3, "b": 3])
    }

    @Test func rangeGivesContiguousRangesInMemberOrder() {
        let t = C.topic(1)
        let members = ["c", "a", "b"].map { C.member($0, [t]) }
        let result = Self.range.assign(AssignmentSpec(members: members, partitionCounts: [t: 7]))
        #expect(result == ["a": [t: [0, 1, 2]], "b": [t: [3, 4]], "c": [t: [5, 6]]])
        let few = Self.range.assign(AssignmentSpec(members: members, partitionCounts: [t: 2]))
        #expect(few == ["a": [t: [0]], "b": [t: [1]], "c": [:]])
    }

    @Test(arguments: UInt64(1)...100) func rangeIsContiguousAndCoPartitioned(_ seed: UInt64) {
        var random = SeededRandom(seed: seed)
        let spec = C.randomSpec(&random, homogeneous: seed % 2 == 0)
        let result = Self.range.assign(spec)
        let ids = spec.members.map(\.memberId).sorted()
        var lineUp: [[String]: [String]] = [:]  // subscribers + count -> their ranges, which must be equal
        for topic in Set(spec.members.flatMap(\.subscribedTopicIds)) {
            let subscribers = ids.filter { id in spec.members.contains { $0.memberId == id && $0.subscribedTopicIds.contains(topic) } }
            let count = Int(spec.partitionCounts[topic]!)
            var next: Int32 = 0
            for (position, id) in subscribers.enumerated() {
                let size = count / subscribers.count + (position < count % subscribers.count ? 1 : 0)
                #expect(result[id]?[topic] ?? [] == Set(next..<next + Int32(size)), "seed \(seed): \(id) range of \(topic)")
                next += Int32(size)
            }
            let ranges = subscribers.map { "\($0):\((result[$0]?[topic] ?? []).sorted())" }
            let key = subscribers + ["\(count)"]
            if let earlier = lineUp[key] { #expect(earlier == ranges, "seed \(seed): co-partitioned topics differ") }
            lineUp[key] = ranges
        }
    }

    @Test func largeGroupsAssignQuickly() {
        var random = SeededRandom(seed: 7)
        let topics = (0..<UInt64(100)).map { C.topic($0) }
        var counts: [KafkaUUID: Int32] = [:]
        for topic in topics { counts[topic] = 100 }
        let homogeneous = AssignmentSpec(members: (0..<1_000).map { C.member("m\($0)", topics) }, partitionCounts: counts)
        let mixed = AssignmentSpec(
            members: (0..<1_000).map { index in C.member("m\(index)", topics.filter { _ in random.chance(300) }) }, partitionCounts: counts)
        let clock = ContinuousClock()
        for spec in [homogeneous, mixed] {
            var result: [String: MemberAssignment] = [:]
            let first = clock.measure { result = Self.uniform.assign(spec) }
            C.checkBalanced(spec, result, "large")
            // From a lopsided start: one old member holds everything.
            let lopsided = C.withCurrent(spec, ["m0": Dictionary(uniqueKeysWithValues: topics.map { ($0, Set(0..<100)) })])
            let second = clock.measure { result = Self.uniform.assign(lopsided) }
            C.checkValid(lopsided, result, "lopsided")
            C.checkBalanced(lopsided, result, "lopsided")
            // Debug builds are several times slower than release; this bounds an accidental blow-up.
            #expect(first < .seconds(5) && second < .seconds(5), "took \(first), \(second)")
        }
        let rangeTime = clock.measure { _ = Self.range.assign(homogeneous) }
        #expect(rangeTime < .seconds(5))
    }
}
