import ClusterMetadata
import EventLoopTimers
import KafkaProtocol
import KafkaTransport
import Logging

/// Keeps a service registered with the controller: registers (retrying with backoff), heartbeats,
/// and registers again when the controller reports the incarnation stale.
public actor NodeMembership {
    let controller: ControllerClient
    let registration: NodeRegistration
    let logger: Logger
    /// The current incarnation, nil until the first registration succeeded.
    public private(set) var incarnation: Int64?
    private var stale = false

    /// Membership of the node described by `registration` .
    public init(controller: ControllerClient, registration: NodeRegistration, logger: Logger) {
        self.controller = controller
        self.registration = registration
        self.logger = logger
    }

    /// Whether a registration has succeeded.
    public var isRegistered: Bool { incarnation != nil }

    /// Removes the registration (graceful shutdown), giving up after `timeout`; returns whether the controller confirmed it.
    /// Call after cancelling `run`, so no heartbeat or re-registration follows it.
    public func deregister(timeout: Duration) async -> Bool {
        guard let incarnation else { return false }
        let controller = controller
        let id = registration.id
        let confirmed = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                guard let result = try? await controller.write(.unregisterNode(id: id, incarnation: incarnation)) else { return false }
                return result == .ok
            }
            group.addTask {
                try? await LoopTimers.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if confirmed { self.incarnation = nil }
        return confirmed
    }

    /// The longest default heartbeat interval.
    public static let maxHeartbeatInterval = Duration.milliseconds(250)

    /// Registers, then heartbeats at a third of the session timeout (at most every 250 ms), until cancelled.
    public func run(heartbeatInterval: Duration? = nil) async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            let confirmed: ControllerRegistration
            do {
                confirmed = try await controller.register(registration)
            } catch {
                logger.warning("registration failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                do { try await LoopTimers.sleep(for: backoff) } catch { return }
                backoff = min(backoff * 2, .seconds(5))
                continue
            }
            backoff = .milliseconds(100)
            incarnation = confirmed.incarnation
            stale = false
            logger.info("registered", metadata: ["incarnation": "\(confirmed.incarnation)"])
            // Well under the controller's close grace (600 ms at least), so a node whose connection merely dropped
            // heartbeats on a new one in time; heartbeats are in-memory at the controller, so this is cheap.
            let interval = heartbeatInterval ?? max(min(confirmed.sessionTimeout / 3, Self.maxHeartbeatInterval), .milliseconds(50))
            let clock = ContinuousClock()
            var next = clock.now
            while !Task.isCancelled && !stale {
                do {
                    _ = try await controller.heartbeat(nodeId: registration.id, incarnation: confirmed.incarnation, metadataVersion: confirmed.metadataVersion)
                } catch ControllerClientError.server(let code, _) where code == KafkaErrorCode.staleBrokerEpoch.rawValue {
                    logger.warning("incarnation no longer current; registering again")
                    stale = true
                } catch {
                    logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
                }
                next = next.advanced(by: interval)
                if next < clock.now { next = clock.now }
                do { try await LoopTimers.sleep(until: next) } catch { return }
            }
        }
    }
}
