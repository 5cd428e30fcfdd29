import Foundation

/// One request/response pair, keyed by api key.
struct ApiPair {
    var key: Int
    var caseName: String
    var request: MessageSpec
    var response: MessageSpec
}

func emitApiKeyFile(_ pairs: [ApiPair]) -> String {
    var w = CodeWriter()
    w.line("import NIOCore")
    w.line("")
    w.line("/// Every Kafka api key the generated codec knows (upstream and project-internal).")
    w.open("public enum ApiKey: Int16, CaseIterable, Sendable")
    for pair in pairs {
        let flexible = pair.request.firstFlexibleVersion.map { ", flexible from v\($0)" } ?? ""
        w.line("/// \(pair.request.name.dropLast("Request".count)): versions \(pair.request.validVersions.lowerBound)-\(pair.request.validVersions.upperBound)\(flexible).")
        w.line("case \(pair.caseName) = \(pair.key)")
    }
    w.line("")
    w.line("/// The api name as Kafka prints it (request name without \"Request\").")
    w.open("public var name: String")
    w.line("switch self {")
    for pair in pairs {
        w.line("case .\(pair.caseName): return \(swiftStringLiteral(String(pair.request.name.dropLast("Request".count))))")
    }
    w.line("}")
    w.close()
    w.line("")
    w.line("/// The versions the schema defines.")
    w.open("public var validVersions: ClosedRange<Int16>")
    w.line("switch self {")
    for pair in pairs {
        w.line("case .\(pair.caseName): return \(pair.request.validVersions.lowerBound)...\(pair.request.validVersions.upperBound)")
    }
    w.line("}")
    w.close()
    w.line("")
    w.line("/// The first version using the flexible encoding; nil if none does.")
    w.open("public var firstFlexibleVersion: Int16?")
    w.line("switch self {")
    for pair in pairs {
        w.line("case .\(pair.caseName): return \(pair.request.firstFlexibleVersion.map(String.init) ?? "nil")")
    }
    w.line("}")
    w.close()
    w.line("")
    w.line("/// Whether the newest schema version is still under development (not to be advertised).")
    w.open("public var latestVersionUnstable: Bool")
    w.line("switch self {")
    for pair in pairs {
        w.line("case .\(pair.caseName): return \(pair.request.latestVersionUnstable ? "true" : "false")")
    }
    w.line("}")
    w.close()
    w.line("")
    w.line("/// Request header version for a request of this api at `version`.")
    w.open("public func requestHeaderVersion(_ version: Int16) -> Int16")
    // ControlledShutdown v0 predates the client id in the header.
    if pairs.contains(where: { $0.key == 7 }) {
        w.open("if self == .controlledShutdown && version == 0")
        w.line("return 0")
        w.close()
    }
    w.open("if let first = firstFlexibleVersion, version >= first")
    w.line("return 2")
    w.close()
    w.line("return 1")
    w.close()
    w.line("")
    w.line("/// Response header version for a response of this api at `version`.")
    w.open("public func responseHeaderVersion(_ version: Int16) -> Int16")
    // Clients parse ApiVersions replies before they know the negotiated version.
    w.open("if self == .apiVersions")
    w.line("return 0")
    w.close()
    w.open("if let first = firstFlexibleVersion, version >= first")
    w.line("return 1")
    w.close()
    w.line("return 0")
    w.close()
    w.line("")
    w.line("/// The generated request type.")
    w.open("public var requestType: any KafkaRequest.Type")
    w.line("switch self {")
    for pair in pairs {
        w.line("case .\(pair.caseName): return \(pair.request.name).self")
    }
    w.line("}")
    w.close()
    w.line("")
    w.line("/// The generated response type.")
    w.open("public var responseType: any KafkaResponse.Type")
    w.line("switch self {")
    for pair in pairs {
        w.line("case .\(pair.caseName): return \(pair.response.name).self")
    }
    w.line("}")
    w.close()
    w.close()
    return generatedHeader("all request schemas") + "\n" + w.text
}

// MARK: - Test support

extension MessageContext {
    func sampleExpression(_ type: FieldType, defaultValue: String, owner: String) throws -> String {
        switch type {
        case .bool: return "sampler.bool(avoiding: \(defaultValue))"
        case .int8: return "sampler.int8(avoiding: \(defaultValue))"
        case .int16: return "sampler.int16(avoiding: \(defaultValue))"
        case .int32: return "sampler.int32(avoiding: \(defaultValue))"
        case .int64: return "sampler.int64(avoiding: \(defaultValue))"
        case .uint16: return "sampler.uint16(avoiding: \(defaultValue))"
        case .uint32: return "sampler.uint32(avoiding: \(defaultValue))"
        case .float64: return "sampler.float64(avoiding: \(defaultValue))"
        case .uuid: return "sampler.uuid()"
        case .string: return "sampler.string(avoiding: \(defaultValue))"
        case .bytes, .records: return "sampler.bytes()"
        case let .structure(name): return "\(owner).\(name).sample(version: version, &sampler)"
        case .array: throw SchemaError("nested arrays are not supported")
        }
    }

    func elementDefault(_ type: FieldType) -> String {
        switch type {
        case .bool: "false"
        case .float64: "0.0"
        case .string: "\"\""
        default: "0"
        }
    }

    func emitSample(_ structSpec: StructSpec, qualifiedName: String, isTop: Bool, into w: inout CodeWriter) throws {
        let top = spec.name
        w.open("extension \(qualifiedName): \(isTop ? "SampleableMessage" : "SampleBuildable")")
        w.open("static func sample(version: Int16, _ sampler: inout Sampler) -> \(qualifiedName)")
        w.line("var value: \(qualifiedName) = \(qualifiedName)()")
        declareFlexible(into: &w)
        for field in structSpec.fields {
            let condition = versionCondition(field.versions, within: valid)
            if condition == "false" { continue }
            let target = "value.\(propertyName(field.name))"
            if condition != "true" { w.open("if \(condition)") }
            let canBeNull = isOptional(field) && nullableExpression(field) != "false"
            if canBeNull {
                w.open("if sampler.wantsNull(\(nullableExpression(field)))")
                w.line("\(target) = nil")
                w.reopen("else")
            }
            switch field.type {
            case let .array(element):
                w.open("do")
                w.line("var items: [\(element.isStruct ? "\(top).\(swiftType(element))" : swiftType(element))] = []")
                w.open("for _ in 0..<2")
                w.line("items.append(\(try sampleExpression(element, defaultValue: elementDefault(element), owner: top)))")
                w.close()
                w.line("\(target) = items")
                w.close()
            default:
                let defaultValue = isOptional(field) ? elementDefault(field.type) : try defaultExpression(field)
                w.line("\(target) = \(try sampleExpression(field.type, defaultValue: defaultValue, owner: top))")
            }
            if canBeNull { w.close() }
            if condition != "true" { w.close() }
        }
        let maxTag = structSpec.fields.compactMap(\.tag).max() ?? -1
        if openFlexibleBlock(into: &w) {
            w.line("value.unknownTaggedFields = sampler.unknownTaggedFields(above: \(maxTag))")
            w.close()
        }
        w.line("return value")
        w.close()
        w.close()
    }
}

func emitSampleFile(_ context: MessageContext) throws -> String {
    var w = CodeWriter()
    w.line("import NIOCore")
    w.line("@testable import KafkaProtocol")
    w.line("")
    try context.emitSample(context.spec.body, qualifiedName: context.spec.name, isTop: true, into: &w)
    for nested in context.spec.nested {
        w.line("")
        try context.emitSample(nested, qualifiedName: "\(context.spec.name).\(nested.name)", isTop: false, into: &w)
    }
    return generatedHeader(context.spec.fileName) + "\n" + w.text
}

func emitAllMessagesFile(_ specs: [MessageSpec]) -> String {
    var w = CodeWriter()
    w.line("@testable import KafkaProtocol")
    w.line("")
    w.line("/// Every generated top-level message type, in schema file order.")
    w.line("let allGeneratedMessageTypes: [any SampleableMessage.Type] = [")
    for spec in specs {
        w.line("    \(spec.name).self,")
    }
    w.line("]")
    w.line("")
    let total = specs.reduce(0) { $0 + $1.validVersions.count }
    w.line("/// Number of schema files the generator read.")
    w.line("let generatedSchemaCount: Int = \(specs.count)")
    w.line("/// Sum over all schemas of the number of valid versions: the round-trip test must run this many cases.")
    w.line("let generatedMessageVersionCount: Int = \(total)")
    return generatedHeader("all schemas") + "\n" + w.text
}
