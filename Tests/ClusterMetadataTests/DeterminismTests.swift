import ClusterMetadata
import KafkaProtocol
import NIOCore
import Testing

/// Checks invariants that must hold after every command, remembering what it saw before.
struct InvariantChecker {
    var epochs: [StreamID: LeaderEpoch] = [:]
    var ends: [StreamID: Int64] = [:]
    var starts: [StreamID: Int64] = [:]
    var nextProducerId: Int64 = 0
    var violations: [String] = []

    mutating func check(_ state: MetadataState, step: Int) {
        func fail(_ message: String) { if violations.count < 20 { violations.append("step \(step): \(message)") } }
        let hasActiveBroker = !state.activeBrokers.isEmpty
        for name in state.topicNames {
            guard let topic = state.topics[name] else { continue }
            for (index, partition) in topic.partitions.enumerated() {
                let id = partition.streamId
                if let previous = epochs[id], partition.leaderEpoch < previous {
                    fail("\(name)-\(index) epoch went back from \(previous) to \(partition.leaderEpoch)")
                }
                epochs[id] = partition.leaderEpoch
                guard let stream = state.streams[id] else {
                    fail("\(name)-\(index) has no stream")
                    continue
                }
                if stream.epoch != partition.leaderEpoch { fail("stream \(id) epoch differs from its partition") }
                if partition.leader == -1 && hasActiveBroker { fail("\(name)-\(index) leaderless beside an active broker") }
                if partition.leader != -1 {
                    let node = state.nodes[partition.leader]
                    if node?.kind != .broker || node?.state != .active { fail("\(name)-\(index) led by inactive \(partition.leader)") }
                }
                if stream.startOffset > stream.committedEnd { fail("stream \(id) start past end") }
                if let previous = ends[id], stream.committedEnd < previous { fail("stream \(id) end went back") }
                if let previous = starts[id], stream.startOffset < previous { fail("stream \(id) start went back") }
                ends[id] = stream.committedEnd
                starts[id] = stream.startOffset
                var expected = stream.startOffset
                for location in state.objects(covering: id, from: 0) {
                    if state.objects[location.objectId]?.state != .committed { fail("stream \(id) index holds a dead object") }
                    if location.startOffset > expected { fail("stream \(id) has a gap at \(expected)") }
                    expected = max(expected, location.endOffset)
                }
                if expected != stream.committedEnd, stream.committedEnd > stream.startOffset {
                    fail("stream \(id) objects end at \(expected), committed end \(stream.committedEnd)")
                }
            }
        }
        if state.nextProducerId < nextProducerId { fail("producer ids went back") }
        nextProducerId = state.nextProducerId
    }
}

@Suite struct DeterminismTests {
    struct Run {
        var commands: [MetadataCommand] = []
        var state = MetadataState()
        var checker = InvariantChecker()
        var errors = 0
        var appends = 0
        var compactions = 0
    }

    static func run(seed: UInt64, steps: Int) -> Run {
        var run = Run()
        var generator = CommandGenerator(seed: seed)
        for step in 1...steps {
            let command = generator.next(for: run.state)
            run.commands.append(command)
            let result = run.state.apply(command, index: UInt64(step), term: UInt64(step / 100 + 1))
            if result.errorCode != 0 {
                run.errors += 1
            } else if case .commitObject(_, let sources, _) = command {
                if sources.isEmpty { run.appends += 1 } else { run.compactions += 1 }
            }
            run.checker.check(run.state, step: step)
        }
        return run
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func invariantsHoldAndReplicasAgree(seed: UInt64) throws {
        let steps = 3_000
        let run = Self.run(seed: seed, steps: steps)
        let (commands, original) = (run.commands, run.state)
        #expect(run.checker.violations.isEmpty, "\(run.checker.violations)")
        // The generated run exercises the state: errors happen but most commands succeed.
        #expect(run.errors > 50 && run.errors < steps / 2, "errors \(run.errors)")
        #expect(run.appends > 100, "appends \(run.appends)")
        #expect(run.compactions > 10, "compactions \(run.compactions)")
        #expect(original.objects.values.contains { $0.state == .destroyed })

        var fresh = MetadataState()
        var restored = MetadataState()
        for (offset, command) in commands.enumerated() {
            let index = UInt64(offset + 1)
            _ = fresh.apply(command, index: index, term: UInt64((offset + 1) / 100 + 1))
            if offset == steps / 2 {
                _ = restored.apply(command, index: index, term: UInt64((offset + 1) / 100 + 1))
                restored = try MetadataState(snapshot: restored.encodeSnapshot())
                continue
            }
            _ = restored.apply(command, index: index, term: UInt64((offset + 1) / 100 + 1))
        }
        #expect(fresh == original)
        #expect(restored == original)
        #expect(fresh.encodeSnapshot() == original.encodeSnapshot())
        #expect(restored.encodeSnapshot() == original.encodeSnapshot())
    }

    @Test func snapshotRoundTripEqualsStateAtEveryStage() throws {
        var generator = CommandGenerator(seed: 11)
        var state = MetadataState()
        for step in 1...1_500 {
            _ = state.apply(generator.next(for: state), index: UInt64(step), term: 7)
            if step % 100 == 0 {
                let snapshot = state.encodeSnapshot()
                let decoded = try MetadataState(snapshot: snapshot)
                #expect(decoded == state)
                #expect(decoded.encodeSnapshot() == snapshot)
                #expect(decoded.lastAppliedIndex == UInt64(step))
                #expect(decoded.lastAppliedTerm == 7)
            }
        }
    }

    @Test func generatedCommandsRoundTrip() throws {
        for command in Self.run(seed: 5, steps: 2_000).commands {
            #expect(try MetadataCommand(decoding: command.encode()) == command)
        }
    }
}
