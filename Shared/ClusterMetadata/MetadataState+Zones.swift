/// What a client of one zone is shown (DESIGN §6, zone router): brokers of its zone only, and for a
/// partition led from another zone, one of its zone's brokers, which routes produces to the leader
/// and serves committed data from object storage. Pure, so brokers and tests compute the same view.
extension MetadataState {
    /// Active brokers of `zone`, by id.
    public func activeBrokers(inZone zone: String) -> [NodeRecord] {
        activeBrokers.filter { $0.zone == zone }
    }

    /// The broker a client of `zone` is sent to for `key`: its leader when that is active in `zone`
    /// (or when the zone has no active broker), else one of the zone's active brokers, picked by a
    /// stable hash of the partition so that clients of a zone agree and partitions spread over its brokers.
    public func zoneLeader(of key: PartitionKey, zone: String) -> NodeID? {
        guard let partition = partition(key), partition.leader >= 0, let leader = nodes[partition.leader], leader.state == .active else {
            return nil
        }
        if leader.zone == zone { return leader.id }
        let local = activeBrokers(inZone: zone)
        guard !local.isEmpty else { return leader.id }
        return local[Int(Self.stableHash(key) % UInt64(local.count))].id
    }

    /// FNV-1a over the topic name and partition: the same on every broker and every run.
    static func stableHash(_ key: PartitionKey) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.topic.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        for shift in stride(from: 0, to: 32, by: 8) {
            hash ^= UInt64(UInt32(bitPattern: key.partition) >> UInt32(shift) & 0xff)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }
}
