import KafkaProtocol
import NIOCore

/// Why a record set, batch, record or compressed payload was rejected.
public enum RecordBatchError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The bytes do not form a valid batch (bad lengths, truncation, trailing garbage).
    case corrupt(String)
    /// The stored CRC does not match the bytes it covers.
    case crcMismatch(stored: UInt32, computed: UInt32)
    /// The batch uses a magic other than 2.
    case unsupportedMagic(Int8)
    /// The attributes name a codec this implementation does not know (5-7).
    case unsupportedCodec(Int16)
    /// A codec rejected its input or failed internally.
    case decompressionFailed(CompressionCodec, String)
    /// A size limit (decompressed bytes, batch length) was exceeded.
    case tooLarge(limit: Int)
    /// A batch is well-formed but a record in it is not acceptable.
    case invalidRecord(String)

    /// The Kafka error code a broker answers with for this failure.
    public var kafkaErrorCode: Int16 {
        switch self {
        case .corrupt, .crcMismatch, .unsupportedMagic, .decompressionFailed: 2  // CORRUPT_MESSAGE
        case .unsupportedCodec: 76  // UNSUPPORTED_COMPRESSION_TYPE
        case .tooLarge: 10  // MESSAGE_TOO_LARGE
        case .invalidRecord: 87  // INVALID_RECORD
        }
    }

    public var description: String {
        switch self {
        case let .corrupt(reason): "corrupt record batch: \(reason)"
        case let .crcMismatch(stored, computed):
            "CRC mismatch: stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))"
        case let .unsupportedMagic(magic): "unsupported record batch magic \(magic)"
        case let .unsupportedCodec(codec): "unsupported compression codec \(codec)"
        case let .decompressionFailed(codec, reason): "\(codec) failed: \(reason)"
        case let .tooLarge(limit): "size limit of \(limit) bytes exceeded"
        case let .invalidRecord(reason): "invalid record: \(reason)"
        }
    }

    init(_ error: ProtocolError) {
        self = .corrupt(error.description)
    }
}
