import FloeService
import Foundation

/// `DATA_DIR/cluster.json`: where every service of a `floe dev` cluster runs, so scripts can find, probe and kill them.
public struct ClusterFile: Codable, Sendable, Equatable {
    /// One supervised service.
    public struct Service: Codable, Sendable, Equatable {
        public var kind: String
        public var nodeID: Int32
        public var zone: String
        /// The running process, or nil while it is being restarted or after the cluster stopped.
        public var pid: Int32?
        public var listen: String
        public var admin: String
        /// `running`, `restarting`, `held` (dead and kept down by its hold file, see `Supervisor.holdPath`) or `stopped`.
        public var state: String
        /// How many times it has been restarted.
        public var restarts: Int
        /// Its log file.
        public var log: String

        enum CodingKeys: String, CodingKey {
            case kind, zone, pid, listen, admin, state, restarts, log
            case nodeID = "node_id"
        }

        public init(kind: String, nodeID: Int32, zone: String, pid: Int32?, listen: String, admin: String, state: String, restarts: Int, log: String) {
            self.kind = kind
            self.nodeID = nodeID
            self.zone = zone
            self.pid = pid
            self.listen = listen
            self.admin = admin
            self.state = state
            self.restarts = restarts
            self.log = log
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(kind, forKey: .kind)
            try container.encode(nodeID, forKey: .nodeID)
            try container.encode(zone, forKey: .zone)
            // An explicit null tells readers "not running" rather than "field unknown".
            try container.encode(pid, forKey: .pid)
            try container.encode(listen, forKey: .listen)
            try container.encode(admin, forKey: .admin)
            try container.encode(state, forKey: .state)
            try container.encode(restarts, forKey: .restarts)
            try container.encode(log, forKey: .log)
        }
    }

    /// Comma-separated broker listen addresses; empty while there are no brokers.
    public var bootstrap: String
    public var services: [Service]

    public init(bootstrap: String, services: [Service]) {
        self.bootstrap = bootstrap
        self.services = services
    }

    /// Reads and decodes `path`.
    public static func read(from path: String) throws -> ClusterFile {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONDecoder().decode(ClusterFile.self, from: data)
    }

    /// Writes `path` atomically (temp file + rename) so a reader never sees a half-written file.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var data = try encoder.encode(self)
        data.append(UInt8(ascii: "\n"))
        let temporary = path + ".tmp"
        try data.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }
}

extension ClusterFile {
    /// Services the file lists whose pid still runs one of `executables`, e.g. left behind by a `floe dev` that was SIGKILLed.
    ///
    /// Comparing `/proc/PID/exe` keeps a recycled pid of some unrelated process from counting.
    public func survivors(amongExecutables executables: Set<String>) -> [Service] {
        let resolved = Set(executables.map { URL(fileURLWithPath: $0).resolvingSymlinksInPath().path })
        return services.filter { service in
            guard let pid = service.pid, ChildProcess.isAlive(pid),
                let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
            else { return false }
            return resolved.contains(URL(fileURLWithPath: exe).resolvingSymlinksInPath().path)
        }
    }
}
