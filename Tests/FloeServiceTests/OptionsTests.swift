import KafkaTransport
import ArgumentParser
import FloeService
import Logging
import Synchronization
import Testing

/// A command shaped like a service executable: common options plus one of its own.
struct SampleService: ParsableCommand {
    @OptionGroup var common: CommonOptions
    @OptionGroup var controllers: ControllerOptions
    @Option(name: .customLong("data-dir")) var dataDir: String = "./data"
    @Flag var verbose = false
}

@Suite struct EndpointParsingTests {
    @Test func parsesNamesAddressesAndIPv6() throws {
        #expect(try KafkaEndpoint(parsing: "127.0.0.1:9092") == KafkaEndpoint(host: "127.0.0.1", port: 9092))
        #expect(try KafkaEndpoint(parsing: "broker-0.floe:0") == KafkaEndpoint(host: "broker-0.floe", port: 0))
        let v6 = try KafkaEndpoint(parsing: "[::1]:9190")
        #expect(v6 == KafkaEndpoint(host: "::1", port: 9190))
        #expect(v6.description == "[::1]:9190")
        #expect(try KafkaEndpoint.parseList("a:1,b:2") == [KafkaEndpoint(host: "a", port: 1), KafkaEndpoint(host: "b", port: 2)])
    }

    @Test func rejectsMalformedInputWithSpecificErrors() {
        #expect(throws: EndpointError.empty) { try KafkaEndpoint(parsing: "") }
        #expect(throws: EndpointError.missingPort("localhost")) { try KafkaEndpoint(parsing: "localhost") }
        #expect(throws: EndpointError.missingPort("localhost:")) { try KafkaEndpoint(parsing: "localhost:") }
        #expect(throws: EndpointError.missingHost(":9092")) { try KafkaEndpoint(parsing: ":9092") }
        #expect(throws: EndpointError.invalidPort("h:65536")) { try KafkaEndpoint(parsing: "h:65536") }
        #expect(throws: EndpointError.invalidPort("h:-1")) { try KafkaEndpoint(parsing: "h:-1") }
        #expect(throws: EndpointError.invalidPort("h:99999999999999999999")) { try KafkaEndpoint(parsing: "h:99999999999999999999") }
        #expect(throws: EndpointError.unbracketedIPv6("::1:80")) { try KafkaEndpoint(parsing: "::1:80") }
        #expect(throws: EndpointError.unclosedBracket("[::1:80")) { try KafkaEndpoint(parsing: "[::1:80") }
        #expect(throws: EndpointError.emptyListEntry("a:1,")) { try KafkaEndpoint.parseList("a:1,") }
    }
}

@Suite struct EnvironmentTests {
    let required = ["--node-id", "1", "--listen", "127.0.0.1:9092", "--admin", "127.0.0.1:9292", "--controllers", "c:1"]

    @Test func listsDeclaredFlagsWithTheirVariables() {
        let flags = FloeEnvironment.flags(of: SampleService.self)
        let names = flags.map(\.name)
        #expect(names == ["node-id", "pod-name", "zone", "listen", "advertise", "admin", "log-level", "controllers", "data-dir", "verbose"])
        #expect(flags.first { $0.name == "data-dir" }?.variable == "FLOE_DATA_DIR")
        #expect(flags.first { $0.name == "verbose" }?.takesValue == false)
    }

    @Test func environmentFillsAbsentFlags() throws {
        let command = try SampleService.parseWithEnvironment(
            [],
            environment: [
                "FLOE_NODE_ID": "7", "FLOE_LISTEN": "10.0.0.1:9092", "FLOE_ADMIN": "0.0.0.0:9293",
                "FLOE_CONTROLLERS": "c0:9190,c1:9191", "FLOE_ZONE": "eu-1a", "FLOE_LOG_LEVEL": "debug",
                "FLOE_DATA_DIR": "/var/floe", "FLOE_VERBOSE": "true", "FLOE_UNKNOWN_THING": "ignored",
            ]
        )
        #expect(command.common.nodeID == 7)
        #expect(command.common.listen == KafkaEndpoint(host: "10.0.0.1", port: 9092))
        #expect(command.common.advertised == KafkaEndpoint(host: "10.0.0.1", port: 9092))
        #expect(command.common.zone == "eu-1a")
        #expect(command.common.logLevel == .debug)
        #expect(command.controllers.controllers.endpoints.count == 2)
        #expect(command.dataDir == "/var/floe")
        #expect(command.verbose)
    }

    @Test func commandLineWinsOverEnvironment() throws {
        let command = try SampleService.parseWithEnvironment(
            required + ["--zone=cli-zone", "--data-dir", "/cli"],
            environment: ["FLOE_NODE_ID": "99", "FLOE_ZONE": "env-zone", "FLOE_DATA_DIR": "/env", "FLOE_ADVERTISE": "pub:1"]
        )
        #expect(command.common.nodeID == 1)
        #expect(command.common.zone == "cli-zone")
        #expect(command.dataDir == "/cli")
        #expect(command.common.advertised == KafkaEndpoint(host: "pub", port: 1))
    }

    @Test func defaultsApplyWhenNeitherIsSet() throws {
        let command = try SampleService.parseWithEnvironment(required, environment: [:])
        #expect(command.common.zone == "local")
        #expect(command.common.logLevel == .info)
        #expect(command.common.advertise == nil)
        #expect(!command.verbose)
    }

    @Test func invalidEnvironmentValueNamesTheVariable() throws {
        do {
            _ = try SampleService.parseWithEnvironment(required.filter { $0 != "--listen" && $0 != "127.0.0.1:9092" }, environment: ["FLOE_LISTEN": "nonsense"])
            Issue.record("expected an error")
        } catch let error as EnvironmentError {
            guard case .invalidValue(let variable, let value, let reason) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(variable == "FLOE_LISTEN")
            #expect(value == "nonsense")
            #expect(reason.contains("has no port"))
        }
        #expect(throws: EnvironmentError.invalidSwitch(variable: "FLOE_VERBOSE", value: "maybe")) {
            try SampleService.parseWithEnvironment(required, environment: ["FLOE_VERBOSE": "maybe"])
        }
        #expect(throws: EnvironmentError.self) {
            try SampleService.parseWithEnvironment(Array(required.dropFirst(2)), environment: ["FLOE_NODE_ID": "-3"])
        }
    }

    @Test func invalidCommandLineValuesAreClearErrors() {
        do {
            _ = try SampleService.parseWithEnvironment(required + ["--log-level", "loud"], environment: [:])
            Issue.record("expected an error")
        } catch {
            #expect(SampleService.message(for: error).contains("log level 'loud' is not one of"))
        }
        do {
            _ = try SampleService.parseWithEnvironment(required + ["--advertise", "host"], environment: [:])
            Issue.record("expected an error")
        } catch {
            #expect(SampleService.message(for: error).contains("has no port"))
        }
    }

    @Test func environmentFlagsGoBeforeTheTerminator() throws {
        let merged = try FloeEnvironment.arguments(for: SampleService.self, arguments: ["--", "x"], environment: ["FLOE_ZONE": "z"])
        #expect(merged == ["--zone=z", "--", "x"])
    }
}

@Suite struct LogFormatTests {
    @Test func lineHasTimestampLevelLabelMessageMetadata() {
        let lines = LockedLines()
        var logger = Logger(label: "floe.test") { label in
            FloeLogHandler(label: label, level: .info, sink: { lines.append($0) })
        }
        logger[metadataKey: "zone"] = "a"
        logger.debug("hidden")
        logger.info("hello", metadata: ["raft.term": "3", "error": "bad thing: \"x\""])
        let captured = lines.all
        #expect(captured.count == 1)
        let line = captured.first ?? ""
        #expect(line.hasSuffix(" info floe.test: hello error=\"bad thing: \\\"x\\\"\" raft.term=3 zone=a\n"))
        // 2026-11-21T23:01:02.345Z
        let timestamp = line.prefix(while: { $0 != " " })
        #expect(timestamp.count == 24 && timestamp.hasSuffix("Z") && timestamp.contains("T"))
    }
}

final class LockedLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}
