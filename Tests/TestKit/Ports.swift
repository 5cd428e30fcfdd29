#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a port could not be had.
public struct PortError: Error, CustomStringConvertible {
    public var description: String
}

/// `count` distinct loopback ports the kernel hands out for 127.0.0.1:0, all held open together and
/// released before returning (another process could take one first; fine on a test machine).
public func freePorts(_ count: Int) throws -> [Int] {
    var sockets: [Int32] = []
    defer { for fd in sockets { close(fd) } }
    var ports: [Int] = []
    for _ in 0..<count {
        let fd = try loopbackSocket()
        sockets.append(fd)
        guard let port = bind(fd, port: 0) else { throw PortError(description: "bind 127.0.0.1:0 failed") }
        ports.append(port)
    }
    return ports
}

/// One free loopback port (see ``freePorts(_:)``).
public func freePort() throws -> Int {
    try freePorts(1)[0]
}

/// Whether nothing is bound to `port` on 127.0.0.1 right now.
public func portIsFree(_ port: Int) -> Bool {
    guard let fd = try? loopbackSocket() else { return false }
    defer { close(fd) }
    return bind(fd, port: port) != nil
}

/// A base port `b` such that every `b + offset` is free, searched among `slots` from a random place so
/// concurrent runs on one machine rarely collide; for services laid out on a fixed port plan.
public func freeBasePort(offsets: [Int], slots: some Sequence<Int>) throws -> Int {
    let slots = Array(slots)
    guard !slots.isEmpty else { throw PortError(description: "no port slots to search") }
    let start = Int.random(in: 0..<slots.count)
    for k in 0..<slots.count {
        let base = slots[(start + k) % slots.count]
        if offsets.allSatisfy({ portIsFree(base + $0) }) { return base }
    }
    throw PortError(description: "no free port range for offsets \(offsets)")
}

private func loopbackSocket() throws -> Int32 {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw PortError(description: "socket failed (errno \(errno))") }
    return fd
}

/// Binds `fd` to 127.0.0.1:`port`; returns the port bound (the kernel's choice for 0), nil if taken.
private func bind(_ fd: Int32, port: Int) -> Int? {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
}
