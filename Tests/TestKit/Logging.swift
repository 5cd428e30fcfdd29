import Foundation
import Logging

/// A logger for code under test: silent except for critical lines, at debug level when FLOE_TEST_LOG is set.
public var testLogger: Logger {
    var logger = Logger(label: "floe-test")
    logger.logLevel = ProcessInfo.processInfo.environment["FLOE_TEST_LOG"] != nil ? .debug : .critical
    return logger
}
