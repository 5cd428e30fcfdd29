import CSQLite
#if canImport(Glibc)
import Glibc
#endif
import NIOPosix
import Raft

/// A SQLite failure (or an inconsistency found in the database), with SQLite's result code when there is one.
public struct ControllerStorageError: Error, CustomStringConvertible, Sendable {
    /// SQLite's result code, or -1 for a consistency problem found by this module.
    public var code: Int32
    /// What failed.
    public var message: String

    public var description: String { "storage error \(code): \(message)" }
}

/// One storage step of the Raft driver, written in order inside a transaction.
public enum ControllerStorageOperation: Sendable {
    /// Replace the term and vote.
    case hardState(RaftHardState)
    /// Delete entries from the first one's index on, then append these.
    case append([RaftLogEntry])
    /// A snapshot received from the leader: store it (and as the applied state), drop the covered log.
    case installSnapshot(RaftSnapshot)
    /// A snapshot of the local state machine: store it and the applied state at its index.
    case saveSnapshot(RaftSnapshot)
    /// Delete entries up to and including this index.
    case compact(through: RaftIndex)
    /// Record the applied state machine at `index` so a restart replays only the entries after it.
    case appliedState(index: RaftIndex, term: RaftTerm, data: [UInt8])
}

/// Everything the database holds, as read at startup.
public struct ControllerStoredState: Sendable {
    /// The Raft term, vote, snapshot and log.
    public var raft: RaftPersistentState
    /// The applied state machine snapshot and its index, when one was recorded.
    public var applied: (index: RaftIndex, term: RaftTerm, data: [UInt8])?
}

/// The controller's durable store: one SQLite database (WAL journal, `synchronous=FULL`) used only from one
/// dedicated thread, so blocking calls never run on the cooperative pool or an event loop.
public final class ControllerStorage: Sendable {
    private let pool: NIOThreadPool
    private let connection: SQLiteConnection

    private init(pool: NIOThreadPool, connection: SQLiteConnection) {
        self.pool = pool
        self.connection = connection
    }

    /// Opens (or creates) `controller.db` in `directory`, creating the directory if needed.
    public static func open(directory: String) async throws -> ControllerStorage {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        do {
            let connection = try await pool.runIfActive {
                try makeDirectory(directory)
                return try SQLiteConnection(path: directory + "/controller.db")
            }
            return ControllerStorage(pool: pool, connection: connection)
        } catch {
            try? await pool.shutdownGracefully()
            throw error
        }
    }

    /// Reads the whole durable state.
    public func load() async throws -> ControllerStoredState {
        let connection = connection
        return try await pool.runIfActive { try connection.load() }
    }

    /// Writes `operations` in order in one transaction; returns once it is durable.
    public func write(_ operations: [ControllerStorageOperation]) async throws {
        guard !operations.isEmpty else { return }
        let connection = connection
        try await pool.runIfActive { try connection.write(operations) }
    }

    /// Closes the database and stops the storage thread.
    public func close() async {
        let connection = connection
        _ = try? await pool.runIfActive { connection.close() }
        try? await pool.shutdownGracefully()
    }
}

private func makeDirectory(_ path: String) throws {
    var prefix = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        prefix += "/" + component
        if mkdir(prefix, 0o755) != 0, errno != EEXIST {
            throw ControllerStorageError(code: -1, message: "cannot create directory \(prefix) (errno \(errno))")
        }
    }
}

/// The raw database handle. Only ever touched from the storage thread (the pool has exactly one), which is
/// what makes the unchecked sendability sound.
private final class SQLiteConnection: @unchecked Sendable {
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]

    init(path: String) throws {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw ControllerStorageError(code: rc, message: "open \(path): \(message)")
        }
        db = handle
        try exec("PRAGMA journal_mode=WAL")
        try exec("PRAGMA synchronous=FULL")
        try exec("""
            CREATE TABLE IF NOT EXISTS hard_state (id INTEGER PRIMARY KEY CHECK (id = 0), term INTEGER NOT NULL, voted_for INTEGER);
            CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL, payload BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 0), idx INTEGER NOT NULL, term INTEGER NOT NULL, data BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS applied_state (id INTEGER PRIMARY KEY CHECK (id = 0), idx INTEGER NOT NULL, term INTEGER NOT NULL, data BLOB NOT NULL);
            """)
    }

    func close() {
        for statement in statements.values { sqlite3_finalize(statement) }
        statements.removeAll()
        sqlite3_close(db)
        db = nil
    }

    // MARK: Reading

    func load() throws -> ControllerStoredState {
        var state = RaftPersistentState()
        try query("SELECT term, voted_for FROM hard_state WHERE id = 0") { row in
            let voted = sqlite3_column_type(row, 1) == SQLITE_NULL ? nil : UInt64(bitPattern: sqlite3_column_int64(row, 1))
            state.hardState = RaftHardState(term: UInt64(bitPattern: sqlite3_column_int64(row, 0)), votedFor: voted)
        }
        try query("SELECT idx, term, data FROM snapshot WHERE id = 0") { row in
            state.snapshot = RaftSnapshot(
                metadata: RaftSnapshotMetadata(index: UInt64(bitPattern: sqlite3_column_int64(row, 0)), term: UInt64(bitPattern: sqlite3_column_int64(row, 1))),
                data: blob(row, 2))
        }
        var entries: [RaftLogEntry] = []
        var corrupt: String?
        try query("SELECT idx, term, kind, payload FROM log ORDER BY idx") { row in
            let kindRaw = UInt8(truncatingIfNeeded: sqlite3_column_int64(row, 2))
            guard let kind = RaftLogEntry.Kind(rawValue: kindRaw) else {
                corrupt = "log entry kind \(kindRaw)"
                return
            }
            entries.append(RaftLogEntry(
                term: UInt64(bitPattern: sqlite3_column_int64(row, 1)), index: UInt64(bitPattern: sqlite3_column_int64(row, 0)),
                kind: kind, payload: blob(row, 3)))
        }
        if let corrupt { throw ControllerStorageError(code: -1, message: corrupt) }
        state.entries = entries
        var applied: (index: RaftIndex, term: RaftTerm, data: [UInt8])?
        try query("SELECT idx, term, data FROM applied_state WHERE id = 0") { row in
            applied = (UInt64(bitPattern: sqlite3_column_int64(row, 0)), UInt64(bitPattern: sqlite3_column_int64(row, 1)), blob(row, 2))
        }
        return ControllerStoredState(raft: state, applied: applied)
    }

    // MARK: Writing

    func write(_ operations: [ControllerStorageOperation]) throws {
        try exec("BEGIN IMMEDIATE")
        do {
            for operation in operations { try apply(operation) }
            try exec("COMMIT")
        } catch {
            try? exec("ROLLBACK")
            throw error
        }
    }

    private func apply(_ operation: ControllerStorageOperation) throws {
        switch operation {
        case let .hardState(hard):
            try run("INSERT OR REPLACE INTO hard_state (id, term, voted_for) VALUES (0, ?1, ?2)") { s in
                sqlite3_bind_int64(s, 1, Int64(bitPattern: hard.term))
                if let vote = hard.votedFor { sqlite3_bind_int64(s, 2, Int64(bitPattern: vote)) } else { sqlite3_bind_null(s, 2) }
            }
        case let .append(entries):
            guard let first = entries.first else { return }
            try run("DELETE FROM log WHERE idx >= ?1") { s in sqlite3_bind_int64(s, 1, Int64(bitPattern: first.index)) }
            for entry in entries {
                try run("INSERT INTO log (idx, term, kind, payload) VALUES (?1, ?2, ?3, ?4)") { s in
                    sqlite3_bind_int64(s, 1, Int64(bitPattern: entry.index))
                    sqlite3_bind_int64(s, 2, Int64(bitPattern: entry.term))
                    sqlite3_bind_int64(s, 3, Int64(entry.kind.rawValue))
                    bindBlob(s, 4, entry.payload)
                }
            }
        case let .installSnapshot(snapshot):
            try saveSnapshot(snapshot)
            var matches = false
            try query("SELECT term FROM log WHERE idx = ?1", bind: { s in
                sqlite3_bind_int64(s, 1, Int64(bitPattern: snapshot.metadata.index))
            }) { row in matches = UInt64(bitPattern: sqlite3_column_int64(row, 0)) == snapshot.metadata.term }
            if matches {
                try run("DELETE FROM log WHERE idx <= ?1") { s in sqlite3_bind_int64(s, 1, Int64(bitPattern: snapshot.metadata.index)) }
            } else {
                try run("DELETE FROM log") { _ in }
            }
        case let .saveSnapshot(snapshot):
            try saveSnapshot(snapshot)
        case let .compact(through):
            try run("DELETE FROM log WHERE idx <= ?1") { s in sqlite3_bind_int64(s, 1, Int64(bitPattern: through)) }
        case let .appliedState(index, term, data):
            try saveApplied(index: index, term: term, data: data)
        }
    }

    private func saveSnapshot(_ snapshot: RaftSnapshot) throws {
        try run("INSERT OR REPLACE INTO snapshot (id, idx, term, data) VALUES (0, ?1, ?2, ?3)") { s in
            sqlite3_bind_int64(s, 1, Int64(bitPattern: snapshot.metadata.index))
            sqlite3_bind_int64(s, 2, Int64(bitPattern: snapshot.metadata.term))
            bindBlob(s, 3, snapshot.data)
        }
        try saveApplied(index: snapshot.metadata.index, term: snapshot.metadata.term, data: snapshot.data)
    }

    private func saveApplied(index: RaftIndex, term: RaftTerm, data: [UInt8]) throws {
        // An older applied state never replaces a newer one (a snapshot may be saved after a periodic write).
        try run("""
            INSERT INTO applied_state (id, idx, term, data) VALUES (0, ?1, ?2, ?3)
            ON CONFLICT(id) DO UPDATE SET idx = excluded.idx, term = excluded.term, data = excluded.data WHERE excluded.idx >= applied_state.idx
            """) { s in
            sqlite3_bind_int64(s, 1, Int64(bitPattern: index))
            sqlite3_bind_int64(s, 2, Int64(bitPattern: term))
            bindBlob(s, 3, data)
        }
    }

    // MARK: Helpers

    private func error(_ rc: Int32, _ what: String) -> ControllerStorageError {
        ControllerStorageError(code: rc, message: "\(what): \(db.map { String(cString: sqlite3_errmsg($0)) } ?? "closed")")
    }

    private func exec(_ sql: String) throws {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, sql) }
    }

    private func statement(_ sql: String) throws -> OpaquePointer {
        if let cached = statements[sql] { return cached }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc, "prepare \(sql)") }
        statements[sql] = statement
        return statement
    }

    private func run(_ sql: String, bind: (OpaquePointer) -> Void) throws {
        let s = try statement(sql)
        defer {
            sqlite3_reset(s)
            sqlite3_clear_bindings(s)
        }
        bind(s)
        let rc = sqlite3_step(s)
        guard rc == SQLITE_DONE else { throw error(rc, sql) }
    }

    private func query(_ sql: String, bind: (OpaquePointer) -> Void = { _ in }, row: (OpaquePointer) -> Void) throws {
        let s = try statement(sql)
        defer {
            sqlite3_reset(s)
            sqlite3_clear_bindings(s)
        }
        bind(s)
        while true {
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            row(s)
        }
    }

    private func bindBlob(_ s: OpaquePointer, _ index: Int32, _ bytes: [UInt8]) {
        guard !bytes.isEmpty else {
            // A nil pointer would bind NULL, and the columns are NOT NULL.
            sqlite3_bind_zeroblob(s, index, 0)
            return
        }
        bytes.withUnsafeBytes { raw in
            _ = floe_sqlite3_bind_blob_transient(s, index, raw.baseAddress, Int32(raw.count))
        }
    }

    private func blob(_ row: OpaquePointer, _ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(row, column))
        guard count > 0, let base = sqlite3_column_blob(row, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: base, count: count))
    }
}
