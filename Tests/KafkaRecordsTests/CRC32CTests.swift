import NIOCore
import Testing

@testable import KafkaRecords
import TestKit

@Suite struct CRC32CTests {
    @Test func knownVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        // RFC 3720 (iSCSI) B.4 test patterns.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }) == 0x113F_DB5C)
        Array("123456789".utf8).withUnsafeBytes { raw in
            #expect(CRC32C.portableChecksum(raw) == 0xE306_9283)
            #expect(CRC32C.hardwareChecksum(raw) == 0xE306_9283)
        }
    }

    @Test func hardwareIsUsedOnX86() {
        #if arch(x86_64)
            #expect(CRC32C.hardwareAvailable)
        #endif
    }

    @Test func hardwareMatchesPortableAcrossSizesAndAlignments() {
        var rng = SeededRandom(seed: 0xC0FFEE)
        let data = randomBytes(200_000, using: &rng)
        // Sizes straddle the 8-byte, 3x256 and 3x8192 stream boundaries of the hardware path.
        var sizes = Array(0...80) + [255, 256, 767, 768, 769, 1000, 4095, 24_575, 24_576, 24_577, 50_000, 199_000]
        for _ in 0..<150 { sizes.append(Int.random(in: 0...199_000, using: &rng)) }
        data.withUnsafeBytes { raw in
            for size in sizes {
                for alignment in [0, 1, 3, 7] where alignment + size <= raw.count {
                    let slice = UnsafeRawBufferPointer(rebasing: raw[alignment..<(alignment + size)])
                    let seed = UInt32.random(in: 0...UInt32.max, using: &rng)
                    #expect(
                        CRC32C.hardwareChecksum(slice, continuing: seed) == CRC32C.portableChecksum(slice, continuing: seed),
                        "size \(size) alignment \(alignment)")
                }
            }
        }
    }

    @Test func chunkedEqualsOneShot() {
        var rng = SeededRandom(seed: 42)
        let data = randomBytes(100_000, using: &rng)
        let whole = CRC32C.checksum(data)
        for _ in 0..<50 {
            var crc: UInt32 = 0
            var portable: UInt32 = 0
            var offset = 0
            while offset < data.count {
                let chunk = min(data.count - offset, Int.random(in: 0...30_000, using: &rng))
                data[offset..<(offset + chunk)].withUnsafeBytes { raw in
                    crc = CRC32C.checksum(raw, continuing: crc)
                    portable = CRC32C.portableChecksum(raw, continuing: portable)
                }
                offset += chunk
            }
            #expect(crc == whole)
            #expect(portable == whole)
        }
    }

    @Test func matchesPythonCrc32cPackage() throws {
        let text = String(buffer: try fixture("crc32c-vectors.txt"))
        var checked = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            try #require(parts.count == 2)
            let hex = parts[0] == "-" ? "" : String(parts[0])
            var bytes: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                let next = hex.index(index, offsetBy: 2)
                bytes.append(try #require(UInt8(hex[index..<next], radix: 16)))
                index = next
            }
            let expected = try #require(UInt32(parts[1], radix: 16))
            #expect(CRC32C.checksum(bytes) == expected, "\(bytes.count) bytes")
            bytes.withUnsafeBytes { #expect(CRC32C.portableChecksum($0) == expected) }
            checked += 1
        }
        #expect(checked == 19)
    }
}
