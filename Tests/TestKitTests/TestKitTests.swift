import Synchronization
import TestKit
import Testing

@Suite struct SeededRandomTests {
    /// Recorded seeds replay only while the sequence stays SplitMix64's.
    @Test func seedZeroGivesSplitMix64ReferenceSequence() {
        var random = SeededRandom(seed: 0)
        #expect((0..<3).map { _ in random.next() } == [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
    }

    @Test func helpersStayInRangeAndOneTypeReplaysAnother() {
        var a = SeededRandom(seed: 42)
        var b = SeededRandom(seed: 42)
        for _ in 0..<1000 {
            let small = a.between(3, 9)
            #expect((3...9).contains(small))
            #expect(UInt64(small) == b.between(UInt64(3), 9))
        }
        let (zero, none, never, always) = (a.below(0), a.pick([Int]()), a.chance(0), a.chance(1000))
        #expect(zero == 0)
        #expect(none == nil)
        #expect(!never)
        #expect(always)
    }
}

@Suite struct ManualClockTests {
    @Test func advanceRunsDueCallbacksInDeadlineOrderAtTheirDeadlines() {
        let clock = ManualClock()
        let fired = Mutex<[String]>([])
        clock.after(.seconds(2)) { fired.withLock { $0.append("second at \(clock.now)") } }
        clock.after(.seconds(1)) { fired.withLock { $0.append("first at \(clock.now)") } }
        let cancelled = clock.after(.seconds(1)) { fired.withLock { $0.append("cancelled") } }
        cancelled.cancel()
        clock.advance(by: .milliseconds(1500))
        #expect(fired.withLock { $0 } == ["first at 1.0 seconds"])
        #expect(clock.now == .milliseconds(1500))
        clock.advance(by: .seconds(1))
        #expect(fired.withLock { $0 } == ["first at 1.0 seconds", "second at 2.0 seconds"])
        #expect(clock.pendingCount == 0)
    }

    @Test func sleeperWakesOnlyWhenTimeIsAdvancedPastItsDeadline() async throws {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(for: .seconds(10)) }
        await clock.waitForPending(1)
        clock.advance(by: .seconds(9))
        #expect(clock.pendingCount == 1)
        clock.advance(by: .seconds(1))
        try await sleeper.value
        #expect(clock.now == .seconds(10))
    }

    @Test func cancelledSleeperThrowsAndLeavesNothingPending() async {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(for: .seconds(10)) }
        await clock.waitForPending(1)
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.pendingCount == 0)
    }
}

@Suite struct PortsAndWaitsTests {
    @Test func freePortsAreDistinctAndFree() throws {
        let ports = try freePorts(5)
        #expect(Set(ports).count == 5)
        #expect(ports.allSatisfy(portIsFree))
        let base = try freeBasePort(offsets: [0, 1, 100], slots: stride(from: 40_000, to: 41_000, by: 200))
        #expect([0, 1, 100].allSatisfy { portIsFree(base + $0) })
    }

    @Test func waitUntilReportsTheConditionAndTimesOut() async throws {
        let calls = Mutex(0)
        let counted = await waitUntil(timeout: .seconds(5)) {
            calls.withLock { calls in
                calls += 1
                return calls == 3
            }
        }
        #expect(counted)
        #expect(await !waitUntil(timeout: .milliseconds(30)) { false })
        await #expect(throws: TestTimeout.self) { try await waitUntil("never", timeout: .milliseconds(30)) { false } }
        // An operation that overruns its limit is the thing under test.
        await #expect(throws: TestTimeout.self) { try await withTimeout(.milliseconds(30)) { try await Task.sleep(for: .seconds(60)) } }
    }

    @Test func processExitIsAwaitedAndOverdueProcessIsKilled() async throws {
        let directory = try temporaryDirectory("testkit")
        defer { removeDirectory(directory) }
        let quick = try TestProcess("/bin/sh", ["-c", "echo hello; exit 3"], logPath: directory + "/quick.log")
        #expect(await quick.exitStatus() == 3)
        #expect(quick.logTail().contains("hello"))
        // A process that overruns its limit is the thing under test.
        let slow = try TestProcess("/bin/sleep", ["60"])
        let outcome = await slow.wait(timeout: .milliseconds(100))
        #expect(outcome.timedOut)
        #expect(!slow.isRunning)
    }
}
