import Testing

@Suite struct PartitionLeadershipSimulationTests {
    @Test func leaderHandOffNeverLosesOrReordersAcknowledgedAppends() {
        var total = LeadershipSimulation.Coverage()
        for seed: UInt64 in 1...300 {
            var simulation = LeadershipSimulation(seed: seed)
            for _ in 0..<1000 {
                simulation.step()
                if !simulation.violations.isEmpty { break }
            }
            if simulation.violations.isEmpty { simulation.finish() }
            #expect(simulation.violations.isEmpty, "seed \(seed): \(simulation.violations.prefix(5))")
            if !simulation.violations.isEmpty { return }
            total = total + simulation.coverage
        }
        // The runs reached the paths they exist for.
        #expect(total.acknowledged > 7_000)
        #expect(total.moves > 2_000)
        #expect(total.kills > 300)
        #expect(total.fencedAnswers > 300)
        #expect(total.answersOutOfOrder > 1_500)
        #expect(total.resyncs > 1_000)
        #expect(total.resignedWithAppends > 700)
        #expect(total.brokenConnections > 1_500)
        #expect(total.failed > 2_500)
    }
}
