import Foundation

/// Accumulates indented source lines.
struct CodeWriter {
    private(set) var lines: [String] = []
    private var depth = 0

    mutating func line(_ text: String) {
        lines.append(text.isEmpty ? "" : String(repeating: "    ", count: depth) + text)
    }

    mutating func open(_ text: String) {
        line(text + " {")
        depth += 1
    }

    mutating func close(_ suffix: String = "") {
        depth -= 1
        line("}" + suffix)
    }

    mutating func reopen(_ text: String) {
        depth -= 1
        line("} " + text + " {")
        depth += 1
    }

    var text: String { lines.joined(separator: "\n") + "\n" }
}

let swiftKeywords: Set<String> = [
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import", "init", "inout",
    "internal", "let", "open", "operator", "private", "protocol", "public", "rethrows", "static", "struct",
    "subscript", "typealias", "var", "break", "case", "continue", "default", "defer", "do", "else", "fallthrough",
    "for", "guard", "if", "in", "repeat", "return", "switch", "where", "while", "as", "Any", "catch", "false", "is",
    "nil", "super", "self", "Self", "throw", "throws", "true", "try", "await", "async", "some", "any", "consume",
]

func lowerCamel(_ name: String) -> String {
    guard let first = name.first else { return name }
    return first.lowercased() + name.dropFirst()
}

func propertyName(_ name: String) -> String {
    let lowered = lowerCamel(name)
    return swiftKeywords.contains(lowered) ? "`\(lowered)`" : lowered
}

func swiftStringLiteral(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": result += "\\\\"
        case "\"": result += "\\\""
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}

func docLine(_ about: String) -> String? {
    let flattened = about.split(whereSeparator: { $0.isNewline }).joined(separator: " ")
        .trimmingCharacters(in: .whitespaces)
    return flattened.isEmpty ? nil : "/// " + flattened
}

/// Swift boolean expression for "version is in `range`", knowing the version already lies in `valid`.
/// Returns "true" or "false" when the answer does not depend on the version.
func versionCondition(_ range: VersionRange, within valid: ClosedRange<Int>) -> String {
    if range.isEmpty { return "false" }
    let low = Swift.max(range.low, valid.lowerBound)
    let high = Swift.min(range.high ?? valid.upperBound, valid.upperBound)
    if low > high { return "false" }
    let needsLow = low > valid.lowerBound
    let needsHigh = high < valid.upperBound
    if needsLow && needsHigh {
        return low == high ? "version == \(low)" : "(version >= \(low) && version <= \(high))"
    }
    if needsLow { return "version >= \(low)" }
    if needsHigh { return "version <= \(high)" }
    return "true"
}

func swiftType(_ type: FieldType) -> String {
    switch type {
    case .bool: "Bool"
    case .int8: "Int8"
    case .int16: "Int16"
    case .int32: "Int32"
    case .int64: "Int64"
    case .uint16: "UInt16"
    case .uint32: "UInt32"
    case .float64: "Double"
    case .uuid: "KafkaUUID"
    case .string: "String"
    case .bytes, .records: "ByteBuffer"
    case let .array(element): "[\(swiftType(element))]"
    case let .structure(name): name
    }
}

/// Per-message context shared by every struct the message contains.
struct MessageContext {
    var spec: MessageSpec
    var structs: [String: StructSpec]

    var valid: ClosedRange<Int> { spec.validVersions }

    func isFlexible(_ version: Int) -> Bool { spec.flexibleVersions.contains(version) }

    func isOptional(_ field: FieldSpec) -> Bool {
        if field.type == .records { return true }
        return valid.contains(where: { field.nullableVersions.contains($0) && field.versions.contains($0) })
            || field.defaultText == "null"
    }

    func fieldType(_ field: FieldSpec) -> String {
        swiftType(field.type) + (isOptional(field) ? "?" : "")
    }

    func isTagged(_ field: FieldSpec) -> Bool { field.tag != nil }

    func defaultExpression(_ field: FieldSpec) throws -> String {
        if field.defaultText == "null" {
            guard isOptional(field) else { throw SchemaError("\(spec.name).\(field.name): null default on non-nullable field") }
            return "nil"
        }
        let text = field.defaultText.flatMap { $0.isEmpty && field.type != .string ? nil : $0 }
        switch field.type {
        case .int8, .int16, .int32, .int64, .uint16, .uint32:
            guard let text else { return "0" }
            let body = text.hasPrefix("-") ? String(text.dropFirst()) : text
            let valid = body.hasPrefix("0x") ? body.dropFirst(2).allSatisfy(\.isHexDigit) && body.count > 2 : (!body.isEmpty && body.allSatisfy(\.isNumber))
            guard valid else { throw SchemaError("\(spec.name).\(field.name): bad numeric default \(text)") }
            return text
        case .float64:
            guard let text else { return "0.0" }
            guard Double(text) != nil else { throw SchemaError("\(spec.name).\(field.name): bad float default \(text)") }
            return text
        case .bool:
            guard let text else { return "false" }
            guard text == "true" || text == "false" else { throw SchemaError("\(spec.name).\(field.name): bad bool default \(text)") }
            return text
        case .string:
            return swiftStringLiteral(text ?? "")
        case .uuid:
            return "KafkaUUID.zero"
        case .bytes:
            return "ByteBuffer()"
        case .records:
            return "nil"
        case .array:
            if let text, text != "[]" { throw SchemaError("\(spec.name).\(field.name): unsupported array default \(text)") }
            return "[]"
        case let .structure(name):
            return "\(name)()"
        }
    }

    /// "self.x holds its default" as a Swift expression.
    func isDefaultExpression(_ field: FieldSpec, value: String) throws -> String {
        let defaultValue = try defaultExpression(field)
        if case .array = field.type, !isOptional(field) { return "\(value).isEmpty" }
        return "\(value) == \(defaultValue)"
    }

    /// The message-level flexible condition: "true", "false" or a version test.
    var messageFlexible: String { versionCondition(spec.flexibleVersions, within: valid) }

    func flexibleExpression(_ field: FieldSpec) -> String {
        if let override = field.flexibleOverride { return versionCondition(override, within: valid) }
        let message = messageFlexible
        return message == "true" || message == "false" ? message : "flexible"
    }

    /// Opens the block that handles the tagged-field section; false when no version has one.
    func openFlexibleBlock(into w: inout CodeWriter) -> Bool {
        switch messageFlexible {
        case "false": return false
        case "true": w.open("do")
        default: w.open("if flexible")
        }
        return true
    }

    func declareFlexible(into w: inout CodeWriter) {
        let message = messageFlexible
        if message != "true" && message != "false" { w.line("let flexible: Bool = \(message)") }
    }

    func nullableExpression(_ field: FieldSpec) -> String {
        versionCondition(field.nullableVersions, within: valid)
    }

    /// The least number of bytes a value of `type` takes at `version` (used to bound array counts).
    func minimumSize(_ type: FieldType, version: Int, flexible: Bool, nullable: Bool) throws -> Int {
        switch type {
        case .bool, .int8: return 1
        case .int16, .uint16: return 2
        case .int32, .uint32: return 4
        case .int64, .float64: return 8
        case .uuid: return 16
        case .string: return flexible ? 1 : 2
        case .bytes, .records, .array: return flexible ? 1 : 4
        case let .structure(name):
            if nullable { return 1 }
            return try structMinimumSize(name, version: version)
        }
    }

    func structMinimumSize(_ name: String, version: Int) throws -> Int {
        guard let spec = structs[name] else { throw SchemaError("\(self.spec.name): unknown struct \(name)") }
        var total = isFlexible(version) ? 1 : 0
        for field in spec.fields where field.versions.contains(version) && !(isTagged(field) && isFlexible(version)) {
            let fieldFlexible = field.flexibleOverride.map { $0.contains(version) } ?? isFlexible(version)
            total += try minimumSize(field.type, version: version, flexible: fieldFlexible,
                                     nullable: field.nullableVersions.contains(version))
        }
        return total
    }
}

func readScalar(_ type: FieldType, buffer: String) -> String? {
    switch type {
    case .bool: "try \(buffer).readKafkaBool()"
    case .int8, .int16, .int32, .int64, .uint16, .uint32: "try \(buffer).readKafkaInteger(as: \(swiftType(type)).self)"
    case .float64: "try \(buffer).readKafkaFloat64()"
    case .uuid: "try \(buffer).readKafkaUUID()"
    default: nil
    }
}

func writeScalar(_ type: FieldType, value: String, buffer: String) -> String? {
    switch type {
    case .bool: "\(buffer).writeKafkaBool(\(value))"
    case .int8, .int16, .int32, .int64, .uint16, .uint32: "\(buffer).writeKafkaInteger(\(value))"
    case .float64: "\(buffer).writeKafkaFloat64(\(value))"
    case .uuid: "\(buffer).writeKafkaUUID(\(value))"
    default: nil
    }
}


func generatedHeader(_ source: String) -> String {
    "// Code generated by floe-protocol-gen from \(source). DO NOT EDIT.\n"
}

/// The Swift file for one schema.
func emitMessageFile(_ context: MessageContext, responseName: String?, apiKeyCase: String?) throws -> String {
    let spec = context.spec
    var w = CodeWriter()
    w.line("import NIOCore")
    w.line("")
    let conformance: String
    switch spec.kind {
    case "request": conformance = "KafkaRequest"
    case "response": conformance = "KafkaResponse"
    default: conformance = "KafkaMessage"
    }
    w.line("/// \(spec.name) (\(spec.fileName)), versions \(spec.validVersions.lowerBound)-\(spec.validVersions.upperBound).")
    w.open("public struct \(spec.name): \(conformance)")
    if let responseName {
        w.line("public typealias Response = \(responseName)")
    }
    if let apiKeyCase {
        w.line("public static let apiKey: ApiKey = .\(apiKeyCase)")
    }
    w.line("public static let validVersions: ClosedRange<Int16> = \(spec.validVersions.lowerBound)...\(spec.validVersions.upperBound)")
    w.line("public static let firstFlexibleVersion: Int16? = \(spec.firstFlexibleVersion.map(String.init) ?? "nil")")
    w.line("")
    try context.emitStruct(spec.body, isTop: true, into: &w)
    for nested in spec.nested {
        w.line("")
        if let doc = docLine(nested.about) { w.line(doc) }
        w.open("public struct \(nested.name): KafkaStruct")
        try context.emitStruct(nested, isTop: false, into: &w)
        w.close()
    }
    w.close()
    return generatedHeader(spec.fileName) + "\n" + w.text
}

