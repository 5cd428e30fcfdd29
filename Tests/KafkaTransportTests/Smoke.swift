import Testing
@testable import KafkaTransport
