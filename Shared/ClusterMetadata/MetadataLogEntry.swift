import KafkaProtocol
import NIOCore

// MARK: - Log entries

/// Format byte of a log entry that carries a write id ahead of its command. Bare commands start with
/// `metadataFormatVersion`, so the first byte tells the two apart.
let identifiedEntryFormatVersion: UInt8 = 2

/// The payload of one Raft log entry: a command, plus the id of the client write that proposed it when
/// that client may retry it. An entry without an id encodes exactly as its bare command, so logs written
/// before write ids existed still decode, and entries of unidentified writes stay readable by older code.
public struct MetadataLogEntry: Sendable, Hashable {
    /// The command to apply.
    public var command: MetadataCommand
    /// The client write this entry carries out; nil means it is never deduplicated.
    public var writeId: WriteID?

    /// An entry; an all-zero id is the same as none.
    public init(_ command: MetadataCommand, writeId: WriteID? = nil) {
        self.command = command
        self.writeId = writeId == .zero ? nil : writeId
    }

    /// Encodes as the bare command, or as: format byte 2, the 16-byte write id, the bare command.
    public func encode() -> ByteBuffer {
        guard let writeId else { return command.encode() }
        var buffer = ByteBufferAllocator().buffer(capacity: 80)
        buffer.writeInteger(identifiedEntryFormatVersion)
        buffer.writeKafkaUUID(writeId)
        command.encode(into: &buffer)
        return buffer
    }

    /// Decodes either form, occupying all of `buffer`'s readable bytes. Never traps on bad input.
    public init(decoding buffer: ByteBuffer) throws(ProtocolError) {
        guard buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == identifiedEntryFormatVersion else {
            self.init(try MetadataCommand(decoding: buffer))
            return
        }
        var rest = buffer
        rest.moveReaderIndex(forwardBy: 1)
        let writeId = try rest.readKafkaUUID()
        guard writeId != .zero else { throw .invalid("identified metadata entry with an all-zero write id") }
        self.init(try MetadataCommand(decoding: rest), writeId: writeId)
    }
}
