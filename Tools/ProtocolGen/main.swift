import Foundation

/// Command line: floe-protocol-gen --kafka-schemas DIR --project-schemas DIR --out DIR --tests-out DIR
struct Options {
    var kafkaSchemas: String?
    var projectSchemas: String?
    var out: String?
    var testsOut: String?

    init(arguments: [String]) throws {
        var index = 0
        while index < arguments.count {
            let flag = arguments[index]
            guard index + 1 < arguments.count else { throw SchemaError("missing value for \(flag)") }
            let value = arguments[index + 1]
            switch flag {
            case "--kafka-schemas": kafkaSchemas = value
            case "--project-schemas": projectSchemas = value
            case "--out": out = value
            case "--tests-out": testsOut = value
            default: throw SchemaError("unknown option \(flag)")
            }
            index += 2
        }
    }
}

func schemaFiles(in directory: String) throws -> [URL] {
    let names = try FileManager.default.contentsOfDirectory(atPath: directory)
    return names.filter { $0.hasSuffix(".json") }.sorted().map { URL(fileURLWithPath: directory).appendingPathComponent($0) }
}

func write(_ text: String, to directory: String, name: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let url = URL(fileURLWithPath: directory).appendingPathComponent(name)
    try Data(text.utf8).write(to: url)
}

func run() throws {
    let options = try Options(arguments: Array(CommandLine.arguments.dropFirst()))
    guard let kafkaSchemas = options.kafkaSchemas, let out = options.out else {
        throw SchemaError("usage: floe-protocol-gen --kafka-schemas DIR [--project-schemas DIR] --out DIR [--tests-out DIR]")
    }
    var files = try schemaFiles(in: kafkaSchemas)
    var projectFiles: [URL] = []
    if let projectSchemas = options.projectSchemas {
        projectFiles = try schemaFiles(in: projectSchemas)
        files += projectFiles
    }
    var specs: [MessageSpec] = []
    for file in files {
        let spec = try loadSchema(at: file)
        if spec.kind == "metadata" { continue }
        guard ["request", "response", "header", "data"].contains(spec.kind) else {
            throw SchemaError("\(file.lastPathComponent): unknown schema type \(spec.kind)")
        }
        if projectFiles.contains(file), let key = spec.apiKey, key < 10000 {
            throw SchemaError("\(file.lastPathComponent): project api keys start at 10000")
        }
        if specs.contains(where: { $0.name == spec.name }) {
            throw SchemaError("\(file.lastPathComponent): message \(spec.name) defined twice")
        }
        specs.append(spec)
    }
    specs.sort { $0.name < $1.name }

    // Pair requests with responses by api key.
    var pairs: [ApiPair] = []
    for request in specs where request.kind == "request" {
        guard let key = request.apiKey, request.name.hasSuffix("Request") else {
            throw SchemaError("\(request.fileName): request without api key or Request suffix")
        }
        let responseName = String(request.name.dropLast("Request".count)) + "Response"
        guard let response = specs.first(where: { $0.name == responseName && $0.kind == "response" }) else {
            throw SchemaError("\(request.fileName): no response schema \(responseName)")
        }
        guard response.apiKey == key, response.validVersions == request.validVersions else {
            throw SchemaError("\(request.fileName): response key or versions differ")
        }
        if pairs.contains(where: { $0.key == key }) { throw SchemaError("api key \(key) used twice") }
        pairs.append(ApiPair(key: key, caseName: lowerCamel(String(request.name.dropLast("Request".count))),
                             request: request, response: response))
    }
    pairs.sort { $0.key < $1.key }
    for response in specs where response.kind == "response" {
        guard pairs.contains(where: { $0.response.name == response.name }) else {
            throw SchemaError("\(response.fileName): response without request")
        }
    }

    var outputs: [(String, String)] = []
    var testOutputs: [(String, String)] = []
    for spec in specs {
        var structs: [String: StructSpec] = [:]
        for nested in spec.nested { structs[nested.name] = nested }
        let context = MessageContext(spec: spec, structs: structs)
        let pair = pairs.first(where: { $0.request.name == spec.name || $0.response.name == spec.name })
        let responseName = spec.kind == "request" ? pair?.response.name : nil
        outputs.append(("\(spec.name).swift", try emitMessageFile(context, responseName: responseName, apiKeyCase: pair?.caseName)))
        testOutputs.append(("\(spec.name)+Sample.swift", try emitSampleFile(context)))
    }
    outputs.append(("ApiKey.swift", emitApiKeyFile(pairs)))
    testOutputs.append(("AllMessages.swift", emitAllMessagesFile(specs)))

    for (name, text) in outputs { try write(text, to: out, name: name) }
    if let testsOut = options.testsOut {
        for (name, text) in testOutputs { try write(text, to: testsOut, name: name) }
    }
    print("floe-protocol-gen: \(specs.count) schemas, \(pairs.count) api keys, \(outputs.count + testOutputs.count) files")
}

do {
    try run()
} catch {
    FileHandle.standardError.write(Data("floe-protocol-gen: \(error)\n".utf8))
    exit(1)
}
