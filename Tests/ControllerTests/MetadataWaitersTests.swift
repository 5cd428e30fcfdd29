@testable import ControllerCore
import Testing

/// The waiter bookkeeping step by step: long polls wake for a later version, status waiters for any change,
/// everyone at their deadline.
@Suite struct MetadataWaitersTests {
    @Test func longPollsWakeOnlyForAVersionAfterTheirs() {
        var waiters = MetadataWaiters()
        let behind = waiters.add(.fetch(after: 4), deadline: .seconds(10))
        let ahead = waiters.add(.fetch(after: 9), deadline: .seconds(10))
        let status = waiters.add(.status, deadline: .seconds(10))
        #expect(waiters.fetchCount == 2)
        #expect(waiters.applied(through: 5) == [behind, status])
        #expect(waiters.applied(through: 9).isEmpty)
        #expect(waiters.contains(ahead))
        #expect(waiters.applied(through: 10) == [ahead])
        #expect(waiters.fetchCount == 0)
    }

    @Test func deadlinesStatusChangesAndCancellation() {
        var waiters = MetadataWaiters()
        let early = waiters.add(.fetch(after: 0), deadline: .milliseconds(100))
        let status = waiters.add(.status, deadline: .milliseconds(300))
        let late = waiters.add(.fetch(after: 0), deadline: .milliseconds(500))
        #expect(waiters.nextDeadline == .milliseconds(100))
        #expect(waiters.expire(now: .milliseconds(99)).isEmpty)
        #expect(waiters.expire(now: .milliseconds(100)) == [early])
        #expect(waiters.nextDeadline == .milliseconds(300))
        #expect(waiters.statusChanged() == [status])
        #expect(waiters.wake(late) == [late])
        #expect(waiters.wake(late).isEmpty)
        #expect(waiters.nextDeadline == nil)
    }

    @Test func drainingWakesLongPollsAndStopWakesEveryone() {
        var waiters = MetadataWaiters()
        let poll = waiters.add(.fetch(after: 3), deadline: .seconds(30))
        let status = waiters.add(.status, deadline: .seconds(30))
        #expect(waiters.wakeFetches() == [poll])
        #expect(waiters.wakeAll() == [status])
    }
}
