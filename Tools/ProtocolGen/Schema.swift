import Foundation

/// A failure while reading or interpreting a schema file.
struct SchemaError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A version set in schema syntax: "3", "2-7", "4+" or "none".
struct VersionRange: Equatable {
    var low: Int
    /// nil means open-ended ("N+").
    var high: Int?
    var isEmpty: Bool

    static let none = VersionRange(low: 0, high: nil, isEmpty: true)

    init(low: Int, high: Int?, isEmpty: Bool = false) {
        self.low = low
        self.high = high
        self.isEmpty = isEmpty
    }

    init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed == "none" {
            self = .none
        } else if trimmed.hasSuffix("+") {
            guard let low = Int(trimmed.dropLast()) else { throw SchemaError("bad version range \(text)") }
            self.init(low: low, high: nil)
        } else if let dash = trimmed.firstIndex(of: "-") {
            guard let low = Int(trimmed[..<dash]), let high = Int(trimmed[trimmed.index(after: dash)...]) else {
                throw SchemaError("bad version range \(text)")
            }
            self.init(low: low, high: high)
        } else {
            guard let exact = Int(trimmed) else { throw SchemaError("bad version range \(text)") }
            self.init(low: exact, high: exact)
        }
    }

    func contains(_ version: Int) -> Bool {
        if isEmpty { return false }
        if version < low { return false }
        if let high, version > high { return false }
        return true
    }

    /// Whether every version of `other` (a closed range) lies in this range.
    func covers(_ versions: ClosedRange<Int>) -> Bool {
        versions.allSatisfy { contains($0) }
    }
}

/// A schema field type.
indirect enum FieldType: Equatable {
    case bool, int8, int16, int32, int64, uint16, uint32, float64, uuid, string, bytes, records
    case array(FieldType)
    case structure(String)

    init(parsing raw: String) throws {
        let text = raw.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("[]") {
            self = .array(try FieldType(parsing: String(text.dropFirst(2))))
            return
        }
        switch text {
        case "bool": self = .bool
        case "int8": self = .int8
        case "int16": self = .int16
        case "int32": self = .int32
        case "int64": self = .int64
        case "uint16": self = .uint16
        case "uint32": self = .uint32
        case "float64": self = .float64
        case "uuid": self = .uuid
        case "string": self = .string
        case "bytes": self = .bytes
        case "records": self = .records
        default:
            guard let first = text.first, first.isUppercase else { throw SchemaError("unknown type \(raw)") }
            self = .structure(text)
        }
    }

    var isStruct: Bool {
        if case .structure = self { return true }
        return false
    }
}

/// One field of a struct, as written in the schema.
struct FieldSpec {
    var name: String
    var type: FieldType
    var versions: VersionRange
    var nullableVersions: VersionRange
    var flexibleOverride: VersionRange?
    var tag: Int?
    var taggedVersions: VersionRange
    var defaultText: String?
    var ignorable: Bool
    var about: String
    /// Inline struct definition (for struct and array-of-struct fields).
    var fields: [FieldSpec]?
}

/// A struct (the message body, an inline struct or a common struct).
struct StructSpec {
    var name: String
    var fields: [FieldSpec]
    var about: String
}

/// A whole schema file.
struct MessageSpec {
    var fileName: String
    var name: String
    var kind: String
    var apiKey: Int?
    var validVersions: ClosedRange<Int>
    var flexibleVersions: VersionRange
    var latestVersionUnstable: Bool
    var body: StructSpec
    /// Every nested struct (inline and common), in first-seen order.
    var nested: [StructSpec]

    var firstFlexibleVersion: Int? {
        flexibleVersions.isEmpty ? nil : Swift.max(flexibleVersions.low, validVersions.lowerBound)
    }
}

/// Removes `//` comments that appear outside string literals.
func stripComments(_ text: String) -> String {
    var output: [UInt8] = []
    let bytes = Array(text.utf8)
    output.reserveCapacity(bytes.count)
    var index = 0
    var inString = false
    while index < bytes.count {
        let byte = bytes[index]
        if inString {
            output.append(byte)
            if byte == UInt8(ascii: "\\"), index + 1 < bytes.count {
                output.append(bytes[index + 1])
                index += 2
                continue
            }
            if byte == UInt8(ascii: "\"") { inString = false }
            index += 1
        } else if byte == UInt8(ascii: "\"") {
            inString = true
            output.append(byte)
            index += 1
        } else if byte == UInt8(ascii: "/"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "/") {
            while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
        } else {
            output.append(byte)
            index += 1
        }
    }
    return String(decoding: output, as: UTF8.self)
}

private func string(_ object: [String: Any], _ key: String) -> String? {
    object[key] as? String
}

private func defaultText(_ value: Any?, type: FieldType) -> String? {
    guard let value else { return nil }
    if let text = value as? String { return text }
    if let number = value as? NSNumber {
        if type == .bool { return number.boolValue ? "true" : "false" }
        return number.stringValue
    }
    return nil
}

private func parseFields(_ raw: Any?, context: String) throws -> [FieldSpec] {
    guard let list = raw as? [Any] else { return [] }
    var fields: [FieldSpec] = []
    for item in list {
        guard let object = item as? [String: Any], let name = string(object, "name"), let typeText = string(object, "type") else {
            throw SchemaError("\(context): field without name or type")
        }
        let type = try FieldType(parsing: typeText)
        guard let versionsText = string(object, "versions") else { throw SchemaError("\(context).\(name): no versions") }
        var tag: Int? = nil
        if let number = object["tag"] as? NSNumber { tag = number.intValue }
        let field = FieldSpec(
            name: name,
            type: type,
            versions: try VersionRange(parsing: versionsText),
            nullableVersions: try string(object, "nullableVersions").map(VersionRange.init(parsing:)) ?? .none,
            flexibleOverride: try string(object, "flexibleVersions").map(VersionRange.init(parsing:)),
            tag: tag,
            taggedVersions: try string(object, "taggedVersions").map(VersionRange.init(parsing:)) ?? .none,
            defaultText: defaultText(object["default"], type: type),
            ignorable: (object["ignorable"] as? Bool) ?? false,
            about: string(object, "about") ?? "",
            fields: object["fields"] == nil ? nil : try parseFields(object["fields"], context: "\(context).\(name)")
        )
        if field.tag != nil && field.taggedVersions.isEmpty {
            throw SchemaError("\(context).\(name): tag without taggedVersions")
        }
        fields.append(field)
    }
    return fields
}

private func collectStructs(_ fields: [FieldSpec], into nested: inout [StructSpec], context: String) throws {
    for field in fields {
        guard let inner = field.fields else { continue }
        let typeName: String
        switch field.type {
        case let .structure(name): typeName = name
        case let .array(.structure(name)): typeName = name
        default: throw SchemaError("\(context).\(field.name): fields on a non-struct type")
        }
        if nested.contains(where: { $0.name == typeName }) {
            throw SchemaError("\(context): struct \(typeName) defined twice")
        }
        nested.append(StructSpec(name: typeName, fields: inner, about: field.about))
        try collectStructs(inner, into: &nested, context: "\(context).\(typeName)")
    }
}

/// Parses one schema file.
func loadSchema(at url: URL) throws -> MessageSpec {
    let text = try String(contentsOf: url, encoding: .utf8)
    let data = Data(stripComments(text).utf8)
    guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw SchemaError("\(url.lastPathComponent): not a JSON object")
    }
    guard let name = string(object, "name"), let kind = string(object, "type"), let validText = string(object, "validVersions") else {
        throw SchemaError("\(url.lastPathComponent): missing name, type or validVersions")
    }
    let valid = try VersionRange(parsing: validText)
    guard !valid.isEmpty, let high = valid.high else { throw SchemaError("\(name): validVersions must be closed") }
    let flexible = try string(object, "flexibleVersions").map(VersionRange.init(parsing:)) ?? .none
    let fields = try parseFields(object["fields"], context: name)
    var nested: [StructSpec] = []
    try collectStructs(fields, into: &nested, context: name)
    if let commons = object["commonStructs"] as? [Any] {
        for item in commons {
            guard let common = item as? [String: Any], let commonName = string(common, "name") else {
                throw SchemaError("\(name): common struct without name")
            }
            if nested.contains(where: { $0.name == commonName }) {
                throw SchemaError("\(name): struct \(commonName) defined twice")
            }
            let commonFields = try parseFields(common["fields"], context: "\(name).\(commonName)")
            nested.append(StructSpec(name: commonName, fields: commonFields, about: string(common, "about") ?? ""))
            try collectStructs(commonFields, into: &nested, context: "\(name).\(commonName)")
        }
    }
    var apiKey: Int? = nil
    if let number = object["apiKey"] as? NSNumber { apiKey = number.intValue }
    return MessageSpec(
        fileName: url.lastPathComponent,
        name: name,
        kind: kind,
        apiKey: apiKey,
        validVersions: valid.low...high,
        flexibleVersions: flexible,
        latestVersionUnstable: (object["latestVersionUnstable"] as? Bool) ?? false,
        body: StructSpec(name: name, fields: fields, about: ""),
        nested: nested
    )
}
