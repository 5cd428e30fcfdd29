import ArgumentParser
import Foundation

/// Fills in command-line flags from `FLOE_<FLAG>` environment variables (manifests configure services that way).
///
/// A flag given on the command line always wins; unknown `FLOE_*` variables are ignored.
public enum FloeEnvironment {
    /// One long option or flag a command accepts, with the variable that can supply it.
    public struct Flag: Hashable, Sendable {
        /// The long name without dashes, e.g. `node-id`.
        public var name: String
        /// True when the flag takes a value (`--node-id 3`), false for a switch (`--verbose`).
        public var takesValue: Bool
        /// The environment variable, e.g. `FLOE_NODE_ID`.
        public var variable: String { FloeEnvironment.variableName(for: name) }
    }

    /// `node-id` → `FLOE_NODE_ID`.
    public static func variableName(for flag: String) -> String {
        "FLOE_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The long flags `command` declares at its top level (option groups included), in declaration order.
    public static func flags(of command: any ParsableArguments.Type) -> [Flag] {
        // ArgumentParser exposes its argument table only as the JSON behind `--experimental-dump-help`.
        guard let data = command._dumpHelp().data(using: .utf8),
            let info = try? JSONDecoder().decode(ToolInfo.self, from: data)
        else { return [] }
        var seen = Set<String>()
        var result: [Flag] = []
        for argument in info.command.arguments ?? [] {
            guard argument.kind == "option" || argument.kind == "flag" else { continue }
            for name in argument.names ?? [] where name.kind == "long" {
                // ArgumentParser's own --help/--version switches are not configuration.
                guard name.name != "help", name.name != "version", seen.insert(name.name).inserted else { continue }
                result.append(Flag(name: name.name, takesValue: argument.kind == "option"))
            }
        }
        return result
    }

    /// `arguments` plus `--flag value` for every declared flag that is absent from `arguments` but set in `environment`.
    public static func arguments(
        for command: any ParsableArguments.Type,
        arguments: [String],
        environment: [String: String]
    ) throws(EnvironmentError) -> [String] {
        let present = presentFlags(in: arguments)
        var extra: [String] = []
        for flag in flags(of: command) where !present.contains(flag.name) {
            guard let value = environment[flag.variable] else { continue }
            if flag.takesValue {
                // `=` keeps a value that starts with a dash from being read as another flag.
                extra.append("--\(flag.name)=\(value)")
            } else {
                switch value.lowercased() {
                case "1", "true", "yes", "on": extra.append("--\(flag.name)")
                case "0", "false", "no", "off", "": break
                default: throw .invalidSwitch(variable: flag.variable, value: value)
                }
            }
        }
        guard !extra.isEmpty else { return arguments }
        // Anything after `--` is positional, so environment flags go before it.
        if let terminator = arguments.firstIndex(of: "--") {
            return Array(arguments[..<terminator]) + extra + Array(arguments[terminator...])
        }
        return arguments + extra
    }

    /// Parses `command` from `arguments` and `environment`; a bad value that came from a variable is reported under the variable's name.
    public static func parse<C: ParsableArguments>(
        _ command: C.Type,
        arguments: [String],
        environment: [String: String]
    ) throws -> C {
        let merged = try Self.arguments(for: command, arguments: arguments, environment: environment)
        do {
            return try command.parse(merged)
        } catch {
            let message = command.message(for: error)
            let present = presentFlags(in: arguments)
            for flag in flags(of: command) where !present.contains(flag.name) {
                guard let value = environment[flag.variable], message.contains("--\(flag.name)") else { continue }
                throw EnvironmentError.invalidValue(variable: flag.variable, value: value, reason: message)
            }
            throw error
        }
    }

    static func presentFlags(in arguments: [String]) -> Set<String> {
        var names = Set<String>()
        for argument in arguments {
            if argument == "--" { break }
            guard argument.hasPrefix("--"), argument.count > 2 else { continue }
            let body = argument.dropFirst(2)
            names.insert(String(body.split(separator: "=", maxSplits: 1).first ?? body))
        }
        return names
    }

    private struct ToolInfo: Decodable {
        var command: CommandInfo
    }

    private struct CommandInfo: Decodable {
        var arguments: [ArgumentInfo]?
    }

    private struct ArgumentInfo: Decodable {
        var kind: String
        var names: [NameInfo]?
    }

    private struct NameInfo: Decodable {
        var kind: String
        var name: String
    }
}

/// A `FLOE_*` environment variable whose value the command cannot use.
public enum EnvironmentError: Error, Equatable, CustomStringConvertible {
    case invalidSwitch(variable: String, value: String)
    case invalidValue(variable: String, value: String, reason: String)

    public var description: String {
        switch self {
        case .invalidSwitch(let variable, let value):
            "environment variable \(variable)='\(value)' is not a boolean (use true/false, 1/0, yes/no)"
        case .invalidValue(let variable, let value, let reason):
            "environment variable \(variable)='\(value)' is invalid: \(reason)"
        }
    }
}

extension ParsableCommand {
    /// Parses this command from argv and the environment (see ``FloeEnvironment``).
    public static func parseWithEnvironment(
        _ arguments: [String],
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> Self {
        try FloeEnvironment.parse(Self.self, arguments: arguments, environment: environment)
    }
}

extension AsyncParsableCommand {
    /// An `@main` entry point like `main()` that also reads `FLOE_<FLAG>` variables; use it as `static func main() async { await mainWithEnvironment() }`.
    ///
    /// With `tasksOnEventLoops`, Swift concurrency runs its tasks on the NIO event loops instead of its own
    /// thread pool (see ``FloeRuntime/runTasksOnEventLoops(loops:)``), as many as an ``EventLoopSizing`` command asks for.
    public static func mainWithEnvironment(tasksOnEventLoops: Bool = false) async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        do {
            var command = try parseWithEnvironment(arguments)
            // Parsing does not touch NIO, so the loop count can still be chosen here.
            if tasksOnEventLoops { FloeRuntime.runTasksOnEventLoops(loops: (command as? any EventLoopSizing)?.eventLoops) }
            try await command.run()
        } catch let error as EnvironmentError {
            exit(withError: ValidationError(error.description))
        } catch {
            exit(withError: error)
        }
    }
}
