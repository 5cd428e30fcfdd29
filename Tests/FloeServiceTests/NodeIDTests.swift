import KafkaTransport
import ArgumentParser
import FloeService
import Testing

/// A command with the common options only, parsed the way the executables parse theirs.
private struct NodeIDCommand: ParsableCommand {
    @OptionGroup var common: CommonOptions
}

private let endpoint = KafkaEndpoint(host: "10.1.2.3", port: 9092)

private func message(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch {
        return "\(error)"
    }
}

@Suite struct NodeIDSpecTests {
    @Test func parsesTheThreeForms() throws {
        #expect(try NodeIDSpec(parsing: "7") == .number(7))
        #expect(try NodeIDSpec(parsing: "0") == .number(0))
        #expect(try NodeIDSpec(parsing: "ordinal:200") == .ordinal(base: 200))
        #expect(try NodeIDSpec(parsing: "auto") == .auto)
        #expect(NodeIDSpec.ordinal(base: 1).description == "ordinal:1")
    }

    @Test(arguments: ["", "-1", "x", "2147483648", "ordinal:", "ordinal:-1", "ordinal:x", "ordinal:2147483648", "AUTO", "auto:1"])
    func rejectsMalformedSpecs(text: String) {
        #expect(throws: ValidationError.self) { try NodeIDSpec(parsing: text) }
    }

    @Test func numberResolvesToItself() throws {
        #expect(try NodeIDSpec.number(42).resolve(podName: nil, advertised: KafkaEndpoint(host: "broker-0", port: 1)) == 42)
    }

    @Test func ordinalAddsThePodsTrailingNumber() throws {
        #expect(try NodeIDSpec.ordinal(base: 1).resolve(podName: "floe-controller-0", advertised: endpoint) == 1)
        #expect(try NodeIDSpec.ordinal(base: 1).resolve(podName: "floe-controller-2", advertised: endpoint) == 3)
        #expect(try NodeIDSpec.ordinal(base: 210).resolve(podName: "floe-wal-writer-b-9", advertised: endpoint) == 219)
        #expect(try NodeIDSpec.ordinal(base: 0).resolve(podName: "x-123456789", advertised: endpoint) == 123_456_789)
    }

    @Test func ordinalErrorsNameWhatIsMissing() {
        let missing = message { _ = try NodeIDSpec.ordinal(base: 1).resolve(podName: nil, advertised: endpoint) }
        #expect(missing?.contains("FLOE_POD_NAME") == true)
        #expect(message { _ = try NodeIDSpec.ordinal(base: 1).resolve(podName: "", advertised: endpoint) }?.contains("FLOE_POD_NAME") == true)
        for name in ["floe-controller", "controller-", "controller-1a", "controller-1234567890", "7"] {
            let text = message { _ = try NodeIDSpec.ordinal(base: 1).resolve(podName: name, advertised: endpoint) }
            #expect(text?.contains("does not end in -N") == true, "\(name): \(text ?? "no error")")
        }
        let overflow = message { _ = try NodeIDSpec.ordinal(base: Int32.max).resolve(podName: "p-1", advertised: endpoint) }
        #expect(overflow?.contains("exceeds") == true)
    }

    @Test func autoUsesTheLow31BitsOfTheIPv4Address() throws {
        #expect(try NodeIDSpec.auto.resolve(podName: nil, advertised: endpoint) == Int32(10 << 24 | 1 << 16 | 2 << 8 | 3))
        #expect(try NodeIDSpec.auto.resolve(podName: nil, advertised: KafkaEndpoint(host: "192.168.0.1", port: 1)) == 0x40A8_0001)
        #expect(try NodeIDSpec.auto.resolve(podName: nil, advertised: KafkaEndpoint(host: "255.255.255.255", port: 1)) == Int32.max)
        // Every private range lands far above the small fixed and ordinal ids.
        for host in ["10.0.0.0", "172.16.0.0", "192.168.0.0", "100.64.0.0"] {
            let id = try NodeIDSpec.auto.resolve(podName: nil, advertised: KafkaEndpoint(host: host, port: 1))
            #expect(id >= 100_000_000, "\(host) → \(id)")
        }
    }

    @Test func autoRejectsNamesIPv6AndAddressesThatMapIntoTheSmallIds() {
        for host in ["broker-0.floe", "::1", "10.0.0", "10.0.0.256", "10.0.0.1.2", "10..0.1", "1.2.3.0004", "+1.2.3.4"] {
            let text = message { _ = try NodeIDSpec.auto.resolve(podName: nil, advertised: KafkaEndpoint(host: host, port: 1)) }
            #expect(text?.contains("is not one") == true, "\(host): \(text ?? "no error")")
        }
        for host in ["0.0.0.0", "0.0.255.255", "128.0.1.2"] {
            let text = message { _ = try NodeIDSpec.auto.resolve(podName: nil, advertised: KafkaEndpoint(host: host, port: 1)) }
            #expect(text?.contains("below \(NodeIDSpec.autoMinimum)") == true, "\(host): \(text ?? "no error")")
        }
    }
}

@Suite struct CommonOptionsNodeIDTests {
    let base = ["--listen", "0.0.0.0:9092", "--admin", "0.0.0.0:9392"]

    @Test func plainNumbersStillWork() throws {
        let command = try NodeIDCommand.parse(["--node-id", "5"] + base)
        #expect(command.common.nodeID == 5)
        #expect(command.common.nodeIDSpec == .number(5))
    }

    @Test func ordinalResolvesFromThePodNameVariable() throws {
        let command = try NodeIDCommand.parseWithEnvironment(
            base, environment: ["FLOE_NODE_ID": "ordinal:200", "FLOE_POD_NAME": "floe-wal-writer-a-3"])
        #expect(command.common.nodeID == 203)
        #expect(command.common.nodeIDSpec == .number(203))
    }

    @Test func autoResolvesFromAdvertiseElseListen() throws {
        let advertised = try NodeIDCommand.parseWithEnvironment(
            base, environment: ["FLOE_NODE_ID": "auto", "FLOE_ADVERTISE": "10.244.1.7:9092"])
        #expect(advertised.common.nodeID == Int32(10 << 24 | 244 << 16 | 1 << 8 | 7))
        let listened = try NodeIDCommand.parse(["--node-id", "auto", "--listen", "10.0.0.9:9092", "--admin", "0.0.0.0:1"])
        #expect(listened.common.nodeID == Int32(10 << 24 | 9))
    }

    @Test func unresolvableIdsAreValidationErrorsNamingTheVariable() {
        // Listening on 0.0.0.0 with nothing advertised leaves auto nothing to derive an id from.
        #expect(throws: EnvironmentError.self) {
            try NodeIDCommand.parseWithEnvironment(base, environment: ["FLOE_NODE_ID": "auto"])
        }
        #expect(throws: (any Error).self) {
            try NodeIDCommand.parse(["--node-id", "auto", "--advertise", "broker.floe:9092"] + base)
        }
        do {
            _ = try NodeIDCommand.parse(["--node-id", "ordinal:1", "--pod-name", "controller"] + base)
            Issue.record("a pod name without an ordinal was accepted")
        } catch {
            #expect(NodeIDCommand.message(for: error).contains("does not end in -N"))
        }
    }
}
