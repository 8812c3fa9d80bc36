from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStockRequest(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StockLevel(_message.Message):
    __slots__ = ("product_id", "units")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    units: int
    def __init__(self, product_id: _Optional[str] = ..., units: _Optional[int] = ...) -> None: ...

class GetStockResponse(_message.Message):
    __slots__ = ("levels",)
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedCompositeFieldContainer[StockLevel]
    def __init__(self, levels: _Optional[_Iterable[_Union[StockLevel, _Mapping]]] = ...) -> None: ...

class GetOrderOutcomeRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class OrderOutcome(_message.Message):
    __slots__ = ("order_id", "status", "items", "reason")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[OrderOutcome.Status]
        APPLIED: _ClassVar[OrderOutcome.Status]
        REJECTED: _ClassVar[OrderOutcome.Status]
    STATUS_UNSPECIFIED: OrderOutcome.Status
    APPLIED: OrderOutcome.Status
    REJECTED: OrderOutcome.Status
    class Item(_message.Message):
        __slots__ = ("product_id", "quantity", "remaining")
        PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
        QUANTITY_FIELD_NUMBER: _ClassVar[int]
        REMAINING_FIELD_NUMBER: _ClassVar[int]
        product_id: str
        quantity: int
        remaining: int
        def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ..., remaining: _Optional[int] = ...) -> None: ...
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    status: OrderOutcome.Status
    items: _containers.RepeatedCompositeFieldContainer[OrderOutcome.Item]
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., status: _Optional[_Union[OrderOutcome.Status, str]] = ..., items: _Optional[_Iterable[_Union[OrderOutcome.Item, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchStockRequest(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StockChange(_message.Message):
    __slots__ = ("product_id", "units", "order_id", "version")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    units: int
    order_id: str
    version: int
    def __init__(self, product_id: _Optional[str] = ..., units: _Optional[int] = ..., order_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...
