"""mutation-aggregator: edge mutations from Kafka into PostgreSQL, safely."""

__version__ = "0.1.0"
