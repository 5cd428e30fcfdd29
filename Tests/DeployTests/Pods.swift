import KafkaTransport
import ArgumentParser
import FloeService
import Foundation

@testable import floe_broker
@testable import floe_controller
@testable import floe_wal_writer

/// What a container's command line and environment parse to, through the executable's own option types.
struct ParsedService {
    var common: CommonOptions
    /// `--voters` of a controller.
    var voters: String?
    /// `--controllers` of every other service.
    var controllers: [KafkaEndpoint]?
}

/// One executable the manifests may run: its flags and how it parses them.
struct Executable: Sendable {
    /// Long flag names without dashes, e.g. `node-id`.
    var flags: [String]
    var parse: @Sendable ([String], [String: String]) throws -> ParsedService
    /// False for an executable that accepts `--listen` for uniformity but serves no Kafka API on it.
    var servesKafka = true
    /// Option defaults as the executable's help states them, by flag name (known for built products only).
    var defaults: [String: String] = [:]

    var variables: Set<String> { Set(flags.map(FloeEnvironment.variableName(for:))) }

    /// The executable a container's `command` starts with; fails when it is neither linked nor built.
    static func named(_ name: String) throws -> Executable {
        if let executable = linked[name] { return executable }
        guard let built = built[name] else { throw DeployTestFailure("no executable \(name) in the Floe package") }
        return try built.get()
    }

    /// The executables this test target links (Package.swift), parsed with their own option types.
    static let linked: [String: Executable] = [
        "floe-controller": Executable(flags: FloeEnvironment.flags(of: FloeController.self).map(\.name)) { arguments, environment in
            let command = try FloeEnvironment.parse(FloeController.self, arguments: arguments, environment: environment)
            return ParsedService(common: command.common, voters: command.voters)
        },
        "floe-wal-writer": Executable(flags: FloeEnvironment.flags(of: FloeWALWriter.self).map(\.name)) { arguments, environment in
            let command = try FloeEnvironment.parse(FloeWALWriter.self, arguments: arguments, environment: environment)
            return ParsedService(common: command.common, controllers: command.controllerOptions.controllers.endpoints)
        },
        "floe-broker": Executable(flags: FloeEnvironment.flags(of: FloeBroker.self).map(\.name)) { arguments, environment in
            let command = try FloeEnvironment.parse(FloeBroker.self, arguments: arguments, environment: environment)
            return ParsedService(common: command.common, controllers: command.controllerOptions.controllers.endpoints)
        },
    ]

    /// Executables the test target does not link, known from their built products (read once per run).
    static let built: [String: Result<Executable, DeployTestFailure>] = [
        "floe-compactor": Result { try BuiltProduct.executable("floe-compactor", servesKafka: false) }
            .mapError { $0 as? DeployTestFailure ?? DeployTestFailure("floe-compactor: \($0)") }
    ]
}

/// An executable read from its built product: its flags from ArgumentParser's `--experimental-dump-help`, the
/// options every service shares parsed with `CommonOptions` and `ControllerOptions`, its own only checked to be set when required.
enum BuiltProduct {
    /// The shared options, with every other argument collected unparsed.
    struct SharedOptions: ParsableArguments {
        @OptionGroup var common: CommonOptions
        @OptionGroup var controllerOptions: ControllerOptions
        @Argument(parsing: .allUnrecognized) var others: [String] = []
    }

    static func executable(_ name: String, servesKafka: Bool) throws -> Executable {
        let path = try locate(name)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("floe-deploy-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let dump = try Overlay.run(path, ["--experimental-dump-help"], scratch: scratch)
        guard let tree = try JSONSerialization.jsonObject(with: dump) as? [String: Any],
            let entries = KubeObject.value(tree, ["command", "arguments"]) as? [[String: Any]]
        else { throw DeployTestFailure("\(path) --experimental-dump-help printed no argument list") }
        var flags: [String] = [], required: [String] = [], defaults: [String: String] = [:]
        for entry in entries where entry["kind"] as? String == "option" || entry["kind"] as? String == "flag" {
            let names = (entry["names"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "long" }.compactMap { $0["name"] as? String }
            for flag in names where flag != "help" && flag != "version" {
                flags.append(flag)
                defaults[flag] = entry["defaultValue"] as? String
                if entry["kind"] as? String == "option", entry["isOptional"] as? Bool == false { required.append(flag) }
            }
        }
        guard flags.contains("node-id") else { throw DeployTestFailure("\(path) --experimental-dump-help lists no --node-id: \(entries)") }
        let requiredFlags = required
        return Executable(flags: flags, parse: { arguments, environment in
            for flag in requiredFlags where environment[FloeEnvironment.variableName(for: flag)] == nil
                && !arguments.contains(where: { $0 == "--\(flag)" || $0.hasPrefix("--\(flag)=") })
            {
                throw DeployTestFailure("\(name) requires --\(flag) (\(FloeEnvironment.variableName(for: flag)))")
            }
            let options = try FloeEnvironment.parse(SharedOptions.self, arguments: arguments, environment: environment)
            return ParsedService(common: options.common, controllers: options.controllerOptions.controllers.endpoints)
        }, servesKafka: servesKafka, defaults: defaults)
    }

    /// The built product beside the running test binary (`swift build --build-tests` builds every executable of the package).
    static func locate(_ name: String) throws -> String {
        let start = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        var directories: [URL] = []
        // On macOS the test binary sits in …/FloePackageTests.xctest/Contents/MacOS, three levels below the products.
        for launched in [start, CommandLine.arguments.first ?? ""] where !launched.isEmpty {
            var directory = URL(fileURLWithPath: launched).deletingLastPathComponent()
            for _ in 0..<4 {
                if !directories.contains(directory) { directories.append(directory) }
                directory.deleteLastPathComponent()
            }
        }
        if let found = directories.map({ $0.appendingPathComponent(name).path }).first(where: FileManager.default.isExecutableFile(atPath:)) {
            return found
        }
        throw DeployTestFailure(
            "\(name) is not built beside the test binary (looked in \(directories.map(\.path).joined(separator: ", "))): the manifests run it, "
                + "so its flags are read from the built product; build it with `swift build --build-tests` (Package.swift must declare it)")
    }
}

/// One pod a workload would create, with its container's command line and environment as Kubernetes would resolve them.
struct Pod {
    var workload: KubeObject
    var name: String
    var ip: String
    var labels: [String: String]
    var container: [String: Any]
    var executableName: String
    var arguments: [String]
    /// Variable names as the container declares them (before resolution), to check against the executable's flags.
    var declaredVariables: [String]
    var environment: [String: String]

    var template: [String: Any] { workload.dictionary("spec", "template") ?? [:] }
    var component: String { labels["app.kubernetes.io/component"] ?? "" }
}

/// Expands the rendered workloads into pods, resolving what the kubelet would resolve.
struct PodExpander {
    let objects: [KubeObject]
    private var nextAddress = 2

    init(objects: [KubeObject]) { self.objects = objects }

    /// Every pod of every workload; `replicas` overrides a workload's replica count by its name.
    mutating func pods(replicas overrides: [String: Int] = [:]) throws -> [Pod] {
        var pods: [Pod] = []
        for workload in objects where workload.kind == "StatefulSet" || workload.kind == "Deployment" {
            let replicas = overrides[workload.name] ?? (workload.value("spec", "replicas") as? Int) ?? 1
            let labels = workload.dictionary("spec", "template", "metadata", "labels") as? [String: String] ?? [:]
            let containers = workload.list("spec", "template", "spec", "containers") as? [[String: Any]] ?? []
            guard !containers.isEmpty else { throw DeployTestFailure("\(workload.label) has no containers") }
            for ordinal in 0..<replicas {
                // StatefulSet pods are NAME-N; Deployment pods get a hashed suffix that is never an ordinal.
                let name = workload.kind == "StatefulSet" ? "\(workload.name)-\(ordinal)" : "\(workload.name)-5d9c7f8b6d-x\(ordinal)q"
                let ip = "10.244.\(nextAddress / 250).\(nextAddress % 250 + 2)"
                nextAddress += 1
                for container in containers {
                    pods.append(try pod(workload: workload, container: container, name: name, ip: ip, labels: labels))
                }
            }
        }
        return pods
    }

    private func pod(workload: KubeObject, container: [String: Any], name: String, ip: String, labels: [String: String]) throws -> Pod {
        let containerName = container["name"] as? String ?? "?"
        let where_ = "\(workload.label) container \(containerName)"
        guard let command = container["command"] as? [String], let first = command.first else {
            throw DeployTestFailure("\(where_) has no command naming the executable")
        }
        var environment: [String: String] = [:]
        var declared: [String] = []
        for source in container["envFrom"] as? [[String: Any]] ?? [] {
            guard let reference = source["configMapRef"] as? [String: Any], let mapName = reference["name"] as? String else {
                throw DeployTestFailure("\(where_): envFrom other than a ConfigMap is not checked")
            }
            let prefix = source["prefix"] as? String ?? ""
            for (key, value) in try configMap(mapName, from: where_) {
                declared.append(prefix + key)
                environment[prefix + key] = value
            }
        }
        for entry in container["env"] as? [[String: Any]] ?? [] {
            guard let variable = entry["name"] as? String else { throw DeployTestFailure("\(where_) has an env entry without a name") }
            declared.append(variable)
            if let value = entry["value"] as? String {
                environment[variable] = Self.expand(value, environment)
            } else if let from = entry["valueFrom"] as? [String: Any] {
                if let field = KubeObject.value(from, ["fieldRef", "fieldPath"]) as? String {
                    switch field {
                    case "metadata.name": environment[variable] = name
                    case "status.podIP": environment[variable] = ip
                    case "metadata.namespace": environment[variable] = "floe"
                    default: throw DeployTestFailure("\(where_): \(variable) reads field \(field), which the test does not model")
                    }
                } else if let reference = from["configMapKeyRef"] as? [String: Any],
                    let mapName = reference["name"] as? String, let key = reference["key"] as? String
                {
                    guard let value = try configMap(mapName, from: where_)[key] else {
                        throw DeployTestFailure("\(where_): \(variable) reads key \(key) that ConfigMap \(mapName) lacks")
                    }
                    environment[variable] = value
                } else if let reference = from["secretKeyRef"] as? [String: Any] {
                    // Secrets are created by the operator, not the overlays, so they must be optional to render a runnable pod.
                    guard reference["optional"] as? Bool == true else {
                        throw DeployTestFailure("\(where_): \(variable) reads a Secret the overlays do not create, without optional: true")
                    }
                } else {
                    throw DeployTestFailure("\(where_): \(variable) has a valueFrom the test does not model")
                }
            } else {
                environment[variable] = ""
            }
        }
        let arguments = (Array(command.dropFirst()) + (container["args"] as? [String] ?? [])).map { Self.expand($0, environment) }
        return Pod(
            workload: workload, name: name, ip: ip, labels: labels, container: container,
            executableName: URL(fileURLWithPath: first).lastPathComponent, arguments: arguments,
            declaredVariables: declared, environment: environment)
    }

    private func configMap(_ name: String, from where_: String) throws -> [String: String] {
        guard let map = objects.first(where: { $0.kind == "ConfigMap" && $0.name == name }) else {
            throw DeployTestFailure("\(where_) refers to ConfigMap \(name), which the overlay does not contain")
        }
        return map.dictionary("data") as? [String: String] ?? [:]
    }

    /// Kubernetes' `$(VAR)` expansion: variables defined earlier are substituted, `$$` is a literal `$`, anything else stays as written.
    static func expand(_ text: String, _ environment: [String: String]) -> String {
        var result = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            result += rest[..<dollar]
            let after = rest[rest.index(after: dollar)...]
            if after.hasPrefix("$") {
                result += "$"
                rest = after.dropFirst()
            } else if after.hasPrefix("("), let close = after.firstIndex(of: ")"),
                let value = environment[String(after[after.index(after: after.startIndex)..<close])]
            {
                result += value
                rest = after[after.index(after: close)...]
            } else {
                result += "$"
                rest = after
            }
        }
        return result + rest
    }
}
