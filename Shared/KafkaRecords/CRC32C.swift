import CCRC32C
import NIOCore

/// CRC-32C (Castagnoli), the checksum of v2 record batches.
public enum CRC32C {
    /// Whether the CPU's crc32 instruction is used.
    public static var hardwareAvailable: Bool { floe_crc32c_hardware_available() != 0 }

    /// CRC-32C of `bytes`, continuing from `crc` (0 to start).
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return floe_crc32c(crc, base, bytes.count)
    }

    /// CRC-32C of a buffer's readable bytes, continuing from `crc` (0 to start).
    @inlinable
    public static func checksum(_ buffer: ByteBuffer, continuing crc: UInt32 = 0) -> UInt32 {
        buffer.withUnsafeReadableBytes { checksum($0, continuing: crc) }
    }

    /// CRC-32C of a byte sequence, continuing from `crc` (0 to start).
    public static func checksum<Bytes: Sequence>(_ bytes: Bytes, continuing crc: UInt32 = 0) -> UInt32
    where Bytes.Element == UInt8 {
        if let result = bytes.withContiguousStorageIfAvailable({ checksum(UnsafeRawBufferPointer($0), continuing: crc) }) {
            return result
        }
        return Array(bytes).withUnsafeBytes { checksum($0, continuing: crc) }
    }

    /// The table-driven implementation, for cross-checking the hardware path.
    public static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return floe_crc32c_portable(crc, base, bytes.count)
    }

    /// The hardware implementation (portable when the CPU lacks the instruction).
    public static func hardwareChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return floe_crc32c_hardware(crc, base, bytes.count)
    }
}
