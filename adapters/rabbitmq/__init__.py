"""RabbitMQ adapter: :class:`RabbitBroker` implements :class:`reactive_services.adapters.Broker` on aio-pika.

Topics are exchanges, consumer groups are quorum queues (one per partition), a commit is an
acknowledgement after handling; see :class:`RabbitBroker` for what maps and what does not.

Example::

    from reactive_services.adapters.rabbitmq import RabbitBroker

    async with RabbitBroker("amqp://guest:guest@127.0.0.1:5672/") as broker:
        broker.source("orders", group_id="inventory").subscribe(print)
        await broker.emit("orders", {"id": 1}, key="customer-7")
"""

from ._broker import RabbitBroker

__all__ = ["RabbitBroker"]
