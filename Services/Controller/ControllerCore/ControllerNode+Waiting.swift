import KafkaProtocol
import NIOCore

/// Metadata long polls and status waits: their bookkeeping is `MetadataWaiters`; this driver keeps their
/// continuations and one timer for the earliest deadline.
extension ControllerNode {
    /// Committed changes after `fromVersion`, waiting up to `maxWait` for one when there are none yet.
    public func fetchMetadata(fromVersion: UInt64, maxWait: Duration, maxEntries: Int) async -> FetchMetadataResponse {
        if appliedIndex <= fromVersion, maxWait > .zero, !stopped, !draining, !Task.isCancelled {
            let id = waiters.add(.fetch(after: fromVersion), deadline: clock.now + maxWait)
            // A closed connection cancels its requests: the server reports the close only after they return, and
            // the session of a killed node is cut short only then, so the long poll must not wait out its time.
            await withTaskCancellationHandler {
                await wait(id)
            } onCancel: {
                Task { await self.cancelWait(id) }
            }
        }
        var response = FetchMetadataResponse()
        response.leaderId = leaderHint ?? -1
        response.appliedVersion = Int64(clamping: appliedIndex)
        guard appliedIndex > fromVersion else {
            response.version = Int64(clamping: fromVersion)
            return response
        }
        let limit = UInt64(max(1, min(maxEntries, 10_000)))
        var next = fromVersion + 1
        if raft.entry(at: next) == nil {
            // The log no longer holds what the caller needs: send the whole applied state.
            response.snapshot = metadata.encodeSnapshot()
            response.snapshotVersion = Int64(clamping: appliedIndex)
            response.version = Int64(clamping: appliedIndex)
            return response
        }
        var bytes = 0
        while next <= appliedIndex, next - fromVersion <= limit, bytes < 4 << 20, let entry = raft.entry(at: next) {
            if entry.kind == .command {
                var item = FetchMetadataResponse.MetadataEntry()
                item.index = Int64(clamping: entry.index)
                item.term = Int64(clamping: entry.term)
                item.command = ByteBuffer(bytes: entry.payload)
                response.entries.append(item)
                bytes += entry.payload.count
            }
            next += 1
        }
        response.version = Int64(clamping: next - 1)
        return response
    }

    /// Waits until `condition` holds for the Raft status or `timeout` passes; returns whether it holds.
    public func waitForStatus(timeout: Duration, _ condition: @Sendable (ControllerSnapshotStatus) -> Bool) async -> Bool {
        let deadline = clock.now + timeout
        var rounds = 0
        while !condition(currentStatus), clock.now < deadline, !stopped, rounds < 100_000 {
            rounds += 1
            await wait(waiters.add(.status, deadline: deadline))
        }
        return condition(currentStatus)
    }

    /// Metadata long polls waiting for a change.
    var fetchWaitersForTesting: Int { waiters.fetchCount }

    /// Suspends until waiter `id` is woken.
    private func wait(_ id: UInt64) async {
        await withCheckedContinuation { continuation in
            guard waiters.contains(id) else { return continuation.resume() }
            waiterContinuations[id] = continuation
            armWaiterTimer()
        }
    }

    private func cancelWait(_ id: UInt64) {
        resumeWaiters(waiters.wake(id))
    }

    /// Resumes the waiters `MetadataWaiters` woke and re-arms the timer for the next deadline.
    func resumeWaiters(_ ids: [UInt64]) {
        guard !ids.isEmpty else { return }
        for id in ids { waiterContinuations.removeValue(forKey: id)?.resume() }
        armWaiterTimer()
    }

    private func armWaiterTimer() {
        let next = waiters.nextDeadline
        guard waiterTimer?.deadline != next else { return }
        waiterTimer?.timer.cancel()
        waiterTimer = nil
        guard let next else { return }
        waiterTimerGeneration += 1
        let generation = waiterTimerGeneration
        let timer = clock.schedule(after: next - clock.now) { Task { await self.waiterTimerFired(generation) } }
        waiterTimer = (next, generation, timer)
    }

    private func waiterTimerFired(_ generation: UInt64) {
        // A timer cancelled after it fired may still get here: only the armed one is disarmed.
        if waiterTimer?.generation == generation { waiterTimer = nil }
        resumeWaiters(waiters.expire(now: clock.now))
        armWaiterTimer()
    }
}
