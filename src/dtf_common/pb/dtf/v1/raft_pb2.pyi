from dtf_common.pb.dtf.v1 import commands_pb2 as _commands_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RaftMessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RAFT_MSG_UNSPECIFIED: _ClassVar[RaftMessageType]
    MSG_PRE_VOTE: _ClassVar[RaftMessageType]
    MSG_PRE_VOTE_RESP: _ClassVar[RaftMessageType]
    MSG_VOTE: _ClassVar[RaftMessageType]
    MSG_VOTE_RESP: _ClassVar[RaftMessageType]
    MSG_APP: _ClassVar[RaftMessageType]
    MSG_APP_RESP: _ClassVar[RaftMessageType]
    MSG_HEARTBEAT: _ClassVar[RaftMessageType]
    MSG_HEARTBEAT_RESP: _ClassVar[RaftMessageType]
    MSG_SNAP: _ClassVar[RaftMessageType]
    MSG_TIMEOUT_NOW: _ClassVar[RaftMessageType]
    MSG_READ_INDEX: _ClassVar[RaftMessageType]
    MSG_READ_INDEX_RESP: _ClassVar[RaftMessageType]
RAFT_MSG_UNSPECIFIED: RaftMessageType
MSG_PRE_VOTE: RaftMessageType
MSG_PRE_VOTE_RESP: RaftMessageType
MSG_VOTE: RaftMessageType
MSG_VOTE_RESP: RaftMessageType
MSG_APP: RaftMessageType
MSG_APP_RESP: RaftMessageType
MSG_HEARTBEAT: RaftMessageType
MSG_HEARTBEAT_RESP: RaftMessageType
MSG_SNAP: RaftMessageType
MSG_TIMEOUT_NOW: RaftMessageType
MSG_READ_INDEX: RaftMessageType
MSG_READ_INDEX_RESP: RaftMessageType

class ConfState(_message.Message):
    __slots__ = ("voters", "disabled", "addresses")
    class AddressesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[str]
    disabled: _containers.RepeatedScalarFieldContainer[str]
    addresses: _containers.ScalarMap[str, str]
    def __init__(self, voters: _Optional[_Iterable[str]] = ..., disabled: _Optional[_Iterable[str]] = ..., addresses: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ConfChange(_message.Message):
    __slots__ = ("type", "node_id", "address")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ADD_NODE: _ClassVar[ConfChange.Type]
        REMOVE_NODE: _ClassVar[ConfChange.Type]
        DISABLE_NODE: _ClassVar[ConfChange.Type]
        ENABLE_NODE: _ClassVar[ConfChange.Type]
    ADD_NODE: ConfChange.Type
    REMOVE_NODE: ConfChange.Type
    DISABLE_NODE: ConfChange.Type
    ENABLE_NODE: ConfChange.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    type: ConfChange.Type
    node_id: str
    address: str
    def __init__(self, type: _Optional[_Union[ConfChange.Type, str]] = ..., node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class SnapshotMeta(_message.Message):
    __slots__ = ("index", "term", "conf")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf: ConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf: _Optional[_Union[ConfState, _Mapping]] = ...) -> None: ...

class HardState(_message.Message):
    __slots__ = ("term", "vote", "commit")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    term: int
    vote: str
    commit: int
    def __init__(self, term: _Optional[int] = ..., vote: _Optional[str] = ..., commit: _Optional[int] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("type", "to", "term", "log_term", "index", "entries", "commit", "reject", "reject_hint", "snapshot", "context")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    type: RaftMessageType
    to: str
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[_commands_pb2.LogEntry]
    commit: int
    reject: bool
    reject_hint: int
    snapshot: SnapshotMeta
    context: bytes
    def __init__(self, type: _Optional[_Union[RaftMessageType, str]] = ..., to: _Optional[str] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[_commands_pb2.LogEntry, _Mapping]]] = ..., commit: _Optional[int] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., snapshot: _Optional[_Union[SnapshotMeta, _Mapping]] = ..., context: _Optional[bytes] = ..., **kwargs) -> None: ...

class RaftEnvelope(_message.Message):
    __slots__ = ("message", "crc32")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    crc32: int
    def __init__(self, message: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("header", "data", "offset", "last", "crc32")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    header: RaftEnvelope
    data: bytes
    offset: int
    last: bool
    crc32: int
    def __init__(self, header: _Optional[_Union[RaftEnvelope, _Mapping]] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ..., last: _Optional[bool] = ..., crc32: _Optional[int] = ...) -> None: ...

class RaftAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    command: bytes
    def __init__(self, command: _Optional[bytes] = ..., **kwargs) -> None: ...

class ForwardReply(_message.Message):
    __slots__ = ("term", "index")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...
