import CLibCrypto
import NIOCore

/// Digests of request bodies, through OpenSSL's libcrypto.
enum Digest {
    static func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var out = [UInt8](repeating: 0, count: 32)
        _ = floe_sha256(bytes.baseAddress, bytes.count, &out)
        return hexString(out)
    }

    static func md5(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        _ = floe_md5(bytes.baseAddress, bytes.count, &out)
        return out
    }

    static func sha256Hex(_ buffer: ByteBuffer) -> String {
        buffer.withUnsafeReadableBytes { sha256Hex($0) }
    }

    static func md5Hex(_ buffer: ByteBuffer) -> String {
        hexString(buffer.withUnsafeReadableBytes { md5($0) })
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let b0 = bytes[index]
            let b1 = index + 1 < bytes.count ? bytes[index + 1] : 0
            let b2 = index + 2 < bytes.count ? bytes[index + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x3) << 4 | b1 >> 4)])
            out.append(index + 1 < bytes.count ? alphabet[Int((b1 & 0xF) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(index + 2 < bytes.count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
