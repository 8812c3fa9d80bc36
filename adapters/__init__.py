"""I/O boundaries: brokers and websockets.

The brokers are ``reactive_services.adapters.memory`` and ``reactive_services.adapters.kafka``
(one folder each, with the same inner files: ``_broker``, ``_admin``, ``_producer``,
``_source``, ``_codec``); the websockets are ``reactive_services.adapters.websocket``.
Every broker implements :class:`Broker`; every source emits :class:`Message`; every record
that cannot be handled goes through :func:`publish_dead_letter`.
"""

from ._admin import declare_group, wait_visible
from ._codec import (
    DLT_SUFFIX,
    dead_letter_headers,
    dead_letter_topic,
    decode_json,
    encode_headers,
    encode_key,
    encode_value,
    headers_to_dict,
)
from ._dead_letter import DeadLetter, publish_dead_letter
from ._message import (
    Batch,
    CurrentMessage,
    Headers,
    HeadersIn,
    Hold,
    Message,
    RecordMetadata,
    current_message,
    deliver,
    header,
    hold,
    track,
)
from ._offsets import OffsetTracker
from ._protocol import Broker, Decoder, Emitter, LogReader, ProcessingGuarantee, TopicPartition
from ._sink import BrokerSink, DeadLetterSink
from ._source import (
    BrokerSource,
    OffsetReset,
    PayloadObserver,
    PayloadRoute,
    check_auto_offset_reset,
    check_processing_guarantee,
    payload_routes,
)

__all__ = [
    "DLT_SUFFIX",
    "Batch",
    "Broker",
    "BrokerSink",
    "BrokerSource",
    "CurrentMessage",
    "DeadLetter",
    "DeadLetterSink",
    "Decoder",
    "Emitter",
    "Headers",
    "HeadersIn",
    "Hold",
    "LogReader",
    "Message",
    "OffsetReset",
    "OffsetTracker",
    "PayloadObserver",
    "PayloadRoute",
    "ProcessingGuarantee",
    "RecordMetadata",
    "TopicPartition",
    "check_auto_offset_reset",
    "check_processing_guarantee",
    "current_message",
    "dead_letter_headers",
    "dead_letter_topic",
    "decode_json",
    "deliver",
    "encode_headers",
    "encode_key",
    "encode_value",
    "header",
    "headers_to_dict",
    "hold",
    "payload_routes",
    "publish_dead_letter",
    "track",
    "wait_visible",
    "declare_group",
]
