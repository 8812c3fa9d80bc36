"""Apache Kafka adapter: :class:`KafkaBroker` implements :class:`reactive_services.adapters.Broker` on aiokafka.

Example::

    from reactive_services.adapters.kafka import KafkaBroker

    async with KafkaBroker("127.0.0.1:9092") as broker:
        await broker.emit("orders", {"id": 1}, key="customer-7")
        broker.source("orders", group_id="inventory").subscribe(print)
"""

from ._broker import KafkaBroker, SourceStats

__all__ = ["KafkaBroker", "SourceStats"]
