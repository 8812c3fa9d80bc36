"""The in-memory broker: Kafka's model (topics, partitions, offsets, consumer groups) in one process."""

from ._broker import InMemoryBroker

__all__ = ["InMemoryBroker"]
