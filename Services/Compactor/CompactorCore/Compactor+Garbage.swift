import ClusterMetadata
import ObjectStorage

/// Garbage collection, run by the first compactor: expiring prepared ids past their deadline,
/// deleting destroyed objects once the grace period has passed (then telling the controller), and
/// deleting store objects that no metadata references (a PUT that landed after its id was forgotten).
extension Compactor {
    /// Keys deleted per store request and per `objectsDeleted` command.
    static let deleteBatch = 500

    func collectGarbage(_ report: inout PassReport) async throws {
        let clock = now()
        if await metadata.current().objects(in: .prepared).contains(where: { $0.deadline <= clock }) {
            _ = try await metadata.write(.expirePrepared(now: clock))
        }
        let state = await metadata.current()
        let due = state.objectsDueForDeletion(now: clock, gracePeriod: settings.deleteGraceMillis)
        var start = 0
        while start < due.count {
            let ids = Array(due[start..<min(start + Self.deleteBatch, due.count)])
            start += ids.count
            let records = ids.compactMap { state.objects[$0] }
            try await store.delete(records.map { ObjectKey.make(id: $0.id, metadataCode: $0.kind.rawValue) })
            let result = try await metadata.write(.objectsDeleted(ids))
            guard case .ok = result else { throw CompactorError.controller("objectsDeleted answered \(result)") }
            report.deletedObjects += ids.count
            report.reclaimedBytes += records.reduce(0) { $0 + Int($1.size) }
        }
        if lastOrphanScan.map({ clock - $0 >= settings.orphanScanIntervalMillis }) ?? true {
            try await deleteOrphans(now: clock, &report)
            lastOrphanScan = clock
        }
    }

    /// Lists the store and deletes objects with Floe keys whose ids the metadata handed out and no
    /// longer knows, once they have been seen that way for the grace period. Keys of other shapes
    /// are not Floe's and are left alone; ids the local metadata has not handed out yet may belong
    /// to a newer state and are left alone too.
    func deleteOrphans(now clock: Millis, _ report: inout PassReport) async throws {
        let listing = try await store.list(prefix: "")
        let state = await metadata.current()
        var seen: [String: Millis] = [:]
        var expired: [ObjectInfo] = []
        for info in listing {
            guard let (_, rawId) = ObjectKey.parse(info.key), let id = ObjectID(exactly: rawId),
                  id < state.nextObjectId, state.objects[id] == nil
            else { continue }
            let first = orphansSeen[info.key] ?? clock
            if clock - first >= settings.deleteGraceMillis { expired.append(info) } else { seen[info.key] = first }
        }
        orphansSeen = seen
        var start = 0
        while start < expired.count {
            let batch = Array(expired[start..<min(start + Self.deleteBatch, expired.count)])
            start += batch.count
            try await store.delete(batch.map(\.key))
            report.deletedObjects += batch.count
            report.reclaimedBytes += batch.reduce(0) { $0 + $1.size }
        }
        if !expired.isEmpty { logger.info("deleted unreferenced objects", metadata: ["count": "\(expired.count)"]) }
    }
}
