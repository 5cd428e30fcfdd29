import ClusterMetadata
import KafkaProtocol
import KafkaTransport
import Logging
import NIOCore

/// Keeps an in-memory `MetadataState` image current by long-polling FetchMetadata from any controller
/// (followers serve it too), and publishes each new version.
public actor MetadataFollower {
    /// The current image.
    public private(set) var state = MetadataState()
    /// The log index the image reflects (no-op entries included); 0 before the first fetch.
    public private(set) var version: UInt64 = 0

    private let client: ControllerClient
    private let logger: Logger
    private let maxWait: Duration
    private var subscribers: [UInt64: AsyncStream<UInt64>.Continuation] = [:]
    private var nextSubscriber: UInt64 = 0
    private var versionWaiters: [UInt64: (target: UInt64, continuation: CheckedContinuation<Void, Never>)] = [:]
    /// Waiters for the image to apply a command past an index (`waitForApplied`).
    private var appliedWaiters: [UInt64: (after: UInt64, continuation: CheckedContinuation<Void, Never>)] = [:]
    private var nextWaiter: UInt64 = 0
    private var preferred = 0

    /// A follower that fetches through `client`; each long poll waits at most `maxWait` at the controller.
    public init(client: ControllerClient, logger: Logger, maxWait: Duration = .seconds(1)) {
        self.client = client
        self.logger = logger
        self.maxWait = maxWait
    }

    /// Starts with `preferredEndpoint` (an index into the client's endpoints), e.g. to read from a nearby replica.
    public func prefer(endpointIndex: Int) {
        preferred = endpointIndex
    }

    /// Every new version, starting with the current one.
    public func versions() -> AsyncStream<UInt64> {
        let (stream, continuation) = AsyncStream<UInt64>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let id = nextSubscriber
        nextSubscriber += 1
        subscribers[id] = continuation
        continuation.yield(version)
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(id) }
        }
        return stream
    }

    private func unsubscribe(_ id: UInt64) {
        subscribers[id] = nil
    }

    /// Returns once the image reached `target`, or `false` after `timeout`.
    public func waitForVersion(_ target: UInt64, timeout: Duration) async -> Bool {
        await waitUntil(timeout: timeout, { self.version >= target }) { id, continuation in
            self.versionWaiters[id] = (target, continuation)
        }
    }

    /// Returns once the image has applied a command after log index `index` (its
    /// `lastAppliedIndex` passed it), or `false` after `timeout`: "wait for the next change" to an
    /// image read at `lastAppliedIndex == index`. Unlike `waitForVersion(index + 1)` this does not
    /// return at once when the log has moved on by entries that change nothing (a new leader's
    /// no-op), which `version` counts and `lastAppliedIndex` does not.
    public func waitForApplied(after index: UInt64, timeout: Duration) async -> Bool {
        await waitUntil(timeout: timeout, { self.state.lastAppliedIndex > index }) { id, continuation in
            self.appliedWaiters[id] = (index, continuation)
        }
    }

    /// Parks the caller under a fresh waiter id (which `apply` or the timeout resumes) unless
    /// `reached` already holds; returns whether it holds at the end.
    private func waitUntil(
        timeout: Duration, _ reached: () -> Bool, park: (UInt64, CheckedContinuation<Void, Never>) -> Void
    ) async -> Bool {
        if reached() { return true }
        let id = nextWaiter
        nextWaiter += 1
        let timer = LoopTimers.after(timeout) { Task { await self.wake(id) } }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in park(id, continuation) }
        timer.cancel()
        return reached()
    }

    private func wake(_ id: UInt64) {
        versionWaiters.removeValue(forKey: id)?.continuation.resume()
        appliedWaiters.removeValue(forKey: id)?.continuation.resume()
    }

    private func wakeAll() {
        let waiters = versionWaiters.values.map(\.continuation) + appliedWaiters.values.map(\.continuation)
        versionWaiters.removeAll()
        appliedWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    /// Fetches until the task is cancelled: from the preferred controller, moving to the next one on errors.
    public func run() async {
        let endpoints = client.endpoints
        var index = preferred
        var backoff = Duration.milliseconds(10)
        while !Task.isCancelled {
            let endpoint = endpoints[index % endpoints.count]
            do {
                let response = try await client.fetchMetadata(from: endpoint, fromVersion: version, maxWait: maxWait)
                if response.errorCode != 0 { throw ControllerClientError.server(code: response.errorCode, message: nil) }
                try apply(response)
                backoff = .milliseconds(10)
            } catch is CancellationError {
                break
            } catch {
                if Task.isCancelled { break }
                logger.debug("metadata fetch failed", metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
                index += 1
                do { try await LoopTimers.sleep(for: backoff) } catch { break }
                backoff = min(backoff * 2, .milliseconds(500))
            }
        }
        for continuation in subscribers.values { continuation.finish() }
        subscribers.removeAll()
        wakeAll()
    }

    /// Applies one FetchMetadata answer to the image.
    func apply(_ response: FetchMetadataResponse) throws {
        let before = version
        if let snapshot = response.snapshot {
            state = try MetadataState(snapshot: snapshot)
            version = UInt64(clamping: response.snapshotVersion)
        }
        for entry in response.entries {
            let index = UInt64(clamping: entry.index)
            guard index > version else { continue }
            let decoded = try MetadataLogEntry(decoding: entry.command)
            _ = state.apply(decoded, index: index, term: UInt64(clamping: entry.term))
            version = index
        }
        version = max(version, UInt64(clamping: response.version))
        guard version != before else { return }
        for continuation in subscribers.values { continuation.yield(version) }
        for (id, waiter) in appliedWaiters where waiter.after < state.lastAppliedIndex {
            appliedWaiters[id] = nil
            waiter.continuation.resume()
        }
        for (id, waiter) in versionWaiters where waiter.target <= version {
            versionWaiters[id] = nil
            waiter.continuation.resume()
        }
    }
}
