"""I/O boundaries: brokers (``reactive_services.adapters.memory``, ``reactive_services.adapters.kafka``) and websockets (``reactive_services.adapters.websocket``).

Every broker implements :class:`Broker`; every source emits :class:`Message`.
"""

from ._codec import (
    DLT_SUFFIX,
    dead_letter_headers,
    dead_letter_topic,
    decode_json,
    encode_key,
    encode_value,
    headers_to_dict,
)
from ._message import Headers, Message, RecordMetadata, current_message, deliver, header, track
from ._offsets import OffsetTracker
from ._protocol import Broker, Decoder
from ._sink import BrokerSink, DeadLetterSink

__all__ = [
    "DLT_SUFFIX",
    "Broker",
    "BrokerSink",
    "DeadLetterSink",
    "Decoder",
    "Headers",
    "Message",
    "OffsetTracker",
    "RecordMetadata",
    "current_message",
    "dead_letter_headers",
    "dead_letter_topic",
    "decode_json",
    "deliver",
    "encode_key",
    "encode_value",
    "header",
    "headers_to_dict",
    "track",
]
