"""Maven manifests of the JVM jars learnscore resolves with mvn (Spark connectors, the Kafka broker)."""
