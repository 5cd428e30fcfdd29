import ControllerCore
import TestKit

/// The test kit's hand-moved clock as the controller's clock: its timers are the manual clock's
/// callbacks, so a node's proposal timeouts and long-poll deadlines pass only when a test advances it.
extension ManualClock: ControllerClock {
    public func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void) -> any ControllerTimer {
        after(delay, body)
    }
}

extension ManualClock.Timer: ControllerTimer {}
