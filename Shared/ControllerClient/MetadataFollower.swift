import ClusterMetadata
import EventLoopTimers
import KafkaProtocol
import KafkaTransport
import Logging
import NIOCore

/// Keeps an in-memory `MetadataState` image current by long-polling FetchMetadata from any controller
/// (followers serve it too), and publishes each new version.
public actor MetadataFollower {
    /// The current image: empty until the first catch-up completes, then the controller's state as of `version`.
    public private(set) var state = MetadataState()
    /// The log index the image reflects (no-op entries included); 0 until the first catch-up completes.
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
    private let maxEntries: Int32
    /// The image being built before the first catch-up completes (see `apply`); nil once published.
    private var catchingUp: (state: MetadataState, version: UInt64)? = (MetadataState(), 0)

    /// A follower that fetches through `client`; each long poll waits at most `maxWait` at the controller
    /// and each answer holds at most `maxEntries` commands.
    public init(client: ControllerClient, logger: Logger, maxWait: Duration = .seconds(1), maxEntries: Int32 = 1000) {
        self.client = client
        self.logger = logger
        self.maxWait = maxWait
        self.maxEntries = maxEntries
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
                let response = try await client.fetchMetadata(from: endpoint, fromVersion: fetchedVersion, maxWait: maxWait, maxEntries: maxEntries)
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

    /// Applies one FetchMetadata answer. Until the first catch-up completes the answers build a
    /// private image: an answer holds at most `maxEntries` commands, and a prefix of the log is the
    /// cluster as it was long ago (this node's own earlier registration active, topics not created
    /// yet), which nothing may see as current. The image is published once it reaches the version
    /// the controller had applied when it answered; later answers apply in place.
    func apply(_ response: FetchMetadataResponse) throws {
        if var image = catchingUp.take() {
            do {
                try Self.apply(response, to: &image.state, version: &image.version)
            } catch {
                catchingUp = (MetadataState(), 0)  // half-applied: start the catch-up again
                throw error
            }
            guard image.version >= response.appliedVersion else {
                catchingUp = image
                return
            }
            state = image.state
            version = image.version
            publish(from: 0)
            return
        }
        let before = version
        try Self.apply(response, to: &state, version: &version)
        publish(from: before)
    }

    /// The version the next fetch starts after: the private image's while catching up.
    var fetchedVersion: UInt64 { catchingUp?.version ?? version }

    private static func apply(_ response: FetchMetadataResponse, to state: inout MetadataState, version: inout UInt64) throws {
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
    }

    /// Tells subscribers and waiters about a version past `before`.
    private func publish(from before: UInt64) {
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
