import Foundation
import NIOCore

@testable import KafkaRecords
import TestKit

func randomBytes<G: RandomNumberGenerator>(_ count: Int, using rng: inout G) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
}

/// Text that compresses like real JSON events: repetitive keys, varying values.
func jsonLikePayload<G: RandomNumberGenerator>(bytes: Int, using rng: inout G) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: bytes + 256)
    var id = 0
    let events = ["click", "view", "purchase", "scroll"]
    while buffer.readableBytes < bytes {
        let user = Int.random(in: 0..<500, using: &rng)
        let amount = Double(Int.random(in: 0..<10_000, using: &rng)) / 100
        buffer.writeString(
            "{\"amount\": \(amount), \"event\": \"\(events[id % 4])\", \"id\": \(id), \"ts\": \(1_700_000_000_000 + id * 17), \"user\": \"user-\(user)\"}\n"
        )
        id += 1
    }
    return buffer.getSlice(at: 0, length: bytes)!
}

func fixture(_ name: String) throws -> ByteBuffer {
    guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures") else {
        throw FixtureMissing(name: name)
    }
    return ByteBuffer(bytes: try Data(contentsOf: url))
}

struct FixtureMissing: Error {
    var name: String
}

extension ByteBuffer {
    var bytesArray: [UInt8] { getBytes(at: readerIndex, length: readableBytes) ?? [] }
}
