import Testing
@testable import KafkaRecords
