import ControllerClient
import KafkaTransport

/// One static Raft voter: its node id and the endpoint its controller listens on.
public struct ControllerVoter: Sendable, Hashable {
    /// The voter's node id.
    public var id: Int32
    /// Where its Kafka-framed port is reached.
    public var endpoint: KafkaEndpoint

    /// A voter.
    public init(id: Int32, endpoint: KafkaEndpoint) {
        self.id = id
        self.endpoint = endpoint
    }

    /// Parses `ID@HOST:PORT,…` (the `--voters` flag).
    public static func parseList(_ text: String) throws -> [ControllerVoter] {
        var voters: [ControllerVoter] = []
        for part in text.split(separator: ",") {
            let item = String(part)
            guard let at = item.firstIndex(of: "@"), let id = Int32(item[..<at]), id >= 0 else {
                throw ControllerClientError.invalidEndpoint(item)
            }
            voters.append(ControllerVoter(id: id, endpoint: try parseEndpoint(String(item[item.index(after: at)...]))))
        }
        guard !voters.isEmpty, Set(voters.map(\.id)).count == voters.count else {
            throw ControllerClientError.invalidEndpoint(text)
        }
        return voters
    }
}

/// Settings of one controller replica.
public struct ControllerConfiguration: Sendable {
    /// This controller's node id (one of the voters).
    public var nodeId: Int32
    /// Its zone label.
    public var zone: String
    /// The static voter set, this node included.
    public var voters: [ControllerVoter]
    /// Address to listen on for Kafka-framed requests.
    public var listenHost: String
    /// Port to listen on (0 picks one).
    public var listenPort: Int
    /// Where the SQLite database lives.
    public var dataDirectory: String
    /// A registered node that has not heartbeated for this long is fenced.
    public var sessionTimeout: Duration
    /// When the connection that carried a node's latest heartbeat closes (the kernel closes a killed process's
    /// sockets), the node is fenced unless it heartbeats again within this; nodes heartbeat several times per
    /// grace period, so a live node that merely reconnects is not fenced.
    public var sessionCloseGrace: Duration
    /// Raft election timeout range and leader heartbeat.
    public var electionTimeoutMin: Duration
    /// Upper bound of the randomized election timeout.
    public var electionTimeoutMax: Duration
    /// How often the leader sends Raft heartbeats. Followers learn the commit index from the next append or
    /// heartbeat, so this bounds how stale metadata served by a follower controller is.
    public var raftHeartbeatInterval: Duration
    /// The shortest time between two ticks of the Raft node; ticks come when one of its timers is
    /// due (heartbeats, elections, session checks), and at least every 100 ms.
    public var tickInterval: Duration
    /// Write the applied metadata state to the database every this many applied entries.
    public var appliedStateInterval: UInt64
    /// Raft snapshot threshold (entries applied since the last snapshot).
    public var snapshotThreshold: UInt64
    /// Entries kept behind a snapshot for lagging followers and metadata fetchers.
    public var entriesKeptAfterSnapshot: UInt64

    /// A configuration with production defaults.
    public init(
        nodeId: Int32, zone: String = "default", voters: [ControllerVoter], listenHost: String = "127.0.0.1", listenPort: Int,
        dataDirectory: String, sessionTimeout: Duration = .seconds(2), sessionCloseGrace: Duration = .milliseconds(1000),
        electionTimeoutMin: Duration = .milliseconds(1000), electionTimeoutMax: Duration = .milliseconds(2000),
        raftHeartbeatInterval: Duration = .milliseconds(10), tickInterval: Duration = .milliseconds(5),
        appliedStateInterval: UInt64 = 1000, snapshotThreshold: UInt64 = 10_000, entriesKeptAfterSnapshot: UInt64 = 1000
    ) {
        self.nodeId = nodeId
        self.zone = zone
        self.voters = voters
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.dataDirectory = dataDirectory
        self.sessionTimeout = sessionTimeout
        self.sessionCloseGrace = sessionCloseGrace
        self.electionTimeoutMin = electionTimeoutMin
        self.electionTimeoutMax = electionTimeoutMax
        self.raftHeartbeatInterval = raftHeartbeatInterval
        self.tickInterval = tickInterval
        self.appliedStateInterval = max(1, appliedStateInterval)
        self.snapshotThreshold = snapshotThreshold
        self.entriesKeptAfterSnapshot = entriesKeptAfterSnapshot
    }
}
