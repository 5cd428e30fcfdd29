#if canImport(Glibc)
import KafkaTransport
import Glibc
#endif
import FloeService

/// Finds the addresses of a plan that something already listens on, before any service starts:
/// a service that cannot bind exits, and the supervisor would restart it again and again.
public enum PortCheck {
    /// One address of a service that is taken.
    public struct Taken: Sendable, Equatable, CustomStringConvertible {
        public var service: String
        public var role: String
        public var address: KafkaEndpoint

        public var description: String { "\(service) \(role) \(address)" }
    }

    /// The listen and admin addresses of `specs` that another socket listens on. Binds a probe
    /// with SO_REUSEADDR, as the services do, so connections of a cluster stopped a moment ago
    /// (TIME_WAIT) do not count. Addresses that are not IPv4 literals are not checked.
    public static func taken(_ specs: [ServiceSpec]) -> [Taken] {
        var result: [Taken] = []
        for spec in specs {
            for (role, address) in [("listen", spec.listen), ("admin", spec.admin)] where !isFree(address) {
                result.append(Taken(service: "\(spec.kind)-\(spec.nodeID)", role: role, address: address))
            }
        }
        return result
    }

    static func isFree(_ address: KafkaEndpoint) -> Bool {
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = UInt16(truncatingIfNeeded: address.port).bigEndian
        guard inet_pton(AF_INET, address.host, &socketAddress.sin_addr) == 1 else { return true }
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard probe >= 0 else { return true }
        defer { close(probe) }
        var one: Int32 = 1
        _ = setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
