/// Kafka-framed TCP transport (server and client) shared by every Floe service.
public enum KafkaTransport {}
