/// Just enough XML for S3 answers: the inner text of simple, non-nested-same-name elements.
enum S3XML {
    /// Inner text of every `<name>…</name>` (attributes allowed on the open tag), in document order.
    static func elements(_ name: String, in text: Substring) -> [Substring] {
        var result: [Substring] = []
        var cursor = text.startIndex
        let open = "<" + name
        let close = "</" + name + ">"
        while let start = text[cursor...].firstRange(of: open) {
            guard let tagEnd = text[start.upperBound...].firstIndex(of: ">") else { break }
            let attributes = text[start.upperBound..<tagEnd]
            // `<KeyCount>` also begins with `<Key`: require the name to end the tag name.
            if let first = attributes.first, first != " ", first != "/" {
                cursor = tagEnd
                continue
            }
            if attributes.hasSuffix("/") {
                result.append(text[tagEnd..<tagEnd])
                cursor = text.index(after: tagEnd)
                continue
            }
            let contentStart = text.index(after: tagEnd)
            guard let end = text[contentStart...].firstRange(of: close) else { break }
            result.append(text[contentStart..<end.lowerBound])
            cursor = end.upperBound
        }
        return result
    }

    static func first(_ name: String, in text: Substring) -> String? {
        elements(name, in: text).first.map(unescape)
    }

    static func unescape(_ text: Substring) -> String {
        guard text.contains("&") else { return String(text) }
        var out = ""
        var rest = text
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semi = rest[amp...].firstIndex(of: ";") else {
                out += rest[amp...]
                return out
            }
            let entity = rest[rest.index(after: amp)..<semi]
            switch entity {
            case "amp": out += "&"
            case "lt": out += "<"
            case "gt": out += ">"
            case "quot": out += "\""
            case "apos": out += "'"
            default:
                var scalar: Unicode.Scalar?
                if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                    scalar = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init)
                } else if entity.hasPrefix("#") {
                    scalar = UInt32(entity.dropFirst(), radix: 10).flatMap(Unicode.Scalar.init)
                }
                if let scalar { out.unicodeScalars.append(scalar) } else { out += rest[amp...semi] }
            }
            rest = rest[rest.index(after: semi)...]
        }
        out += rest
        return out
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                // Control characters are not allowed raw in XML 1.0.
                if scalar.value < 0x20 && scalar != "\t" && scalar != "\n" && scalar != "\r" {
                    out += "&#\(scalar.value);"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
