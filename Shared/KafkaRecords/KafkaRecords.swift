/// Kafka record batches (magic v2), CRC32C and compression codecs.
public enum KafkaRecords {}
