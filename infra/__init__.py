"""Infrastructure: the local Kafka broker, topic provisioning and the ``fiml`` CLI."""
