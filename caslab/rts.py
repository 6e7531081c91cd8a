"""The PDUs of Outlook Anywhere: DCE/RPC connection-oriented PDUs ([C706] chapter 12) and the RTS PDUs
that RPC over HTTP v2 adds to set up and keep alive a virtual connection ([MS-RPCH] sections 2.2.3, 2.2.4).

Every PDU starts with the 16-byte common header: rpc_vers 5, rpc_vers_minor 0, PTYPE, pfc_flags, the
data representation, frag_length, auth_length and call_id. Only the little-endian/ASCII/IEEE data
representation (`10 00 00 00`) is read or written: [MS-RPCH] requires it for RTS PDUs and Windows uses it
for all. An RTS PDU (PTYPE 20) adds Flags and NumberOfCommands and then that many commands, each a
4-byte command type and its fixed or counted body.

`decode_pdu` turns the bytes of one PDU into an `RtsPdu`, `RequestPdu`, `ResponsePdu` or `FaultPdu`;
`encode_pdu` does the reverse. The `conn_*`/`ping`/... builders and `parse_conn_*` parsers cover the
PDUs of the virtual-connection handshake this lab uses:

    client --RPC_OUT_DATA + CONN/A1--> CAS --200 + CONN/A3--> client      (OUT channel)
    client --RPC_IN_DATA  + CONN/B1--> CAS                                 (IN channel, same cookie)
    CAS joins the two halves -> CONN/C2 down OUT; then requests go up IN, responses come down OUT.

Anything truncated, inconsistent or not understood raises `RtsError` and nothing else, so a server can
turn any bad input into one protocol error.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum, IntFlag

RPC_VERS, RPC_VERS_MINOR = 5, 0
DREP_LITTLE_ENDIAN = b"\x10\x00\x00\x00"  # little-endian integers, ASCII characters, IEEE floats
HEADER_LENGTH = 16
MAX_FRAG_LENGTH = 0xFFFF  # frag_length is 16 bits
# The largest fragment Windows sends by default (max_xmit_frag); longer stubs are split into fragments.
MAX_XMIT_FRAG = 5840
RPC_OVER_HTTP_VERSION = 1  # the only version of RPC over HTTP v2 ([MS-RPCH] 2.2.3.5.7)
COOKIE_LENGTH = 16
CONN_A1_LENGTH = 76  # the whole body of RPC_OUT_DATA on a new OUT channel

_HEADER = struct.Struct("<BBBB4sHHI")
_RTS_HEADER = struct.Struct("<HH")
_U32 = struct.Struct("<I")
_REQUEST = struct.Struct("<IHH")  # alloc_hint, p_cont_id, opnum
_RESPONSE = struct.Struct("<IHBB")  # alloc_hint, p_cont_id, cancel_count, reserved
_FAULT = struct.Struct("<IHBBII")  # ... status, reserved


class RtsError(ValueError):
    """A PDU that is truncated, malformed or not the one expected."""


class PType(IntEnum):
    """The PDU types of [C706] 12.6.4 that this lab reads or writes."""

    REQUEST = 0
    RESPONSE = 2
    FAULT = 3
    RTS = 20


class Pfc(IntFlag):
    FIRST_FRAG = 0x01
    LAST_FRAG = 0x02
    PENDING_CANCEL = 0x04
    RESERVED_1 = 0x08
    CONC_MPX = 0x10
    DID_NOT_EXECUTE = 0x20
    MAYBE = 0x40
    OBJECT_UUID = 0x80


WHOLE = Pfc.FIRST_FRAG | Pfc.LAST_FRAG  # an unfragmented PDU; RTS PDUs must carry exactly this


class RtsFlag(IntFlag):
    NONE = 0x0000
    PING = 0x0001
    OTHER_CMD = 0x0002
    RECYCLE_CHANNEL = 0x0004
    IN_CHANNEL = 0x0008
    OUT_CHANNEL = 0x0010
    EOF = 0x0020
    ECHO = 0x0040


_KNOWN_RTS_FLAGS = 0x007F


class Cmd(IntEnum):
    """RTS command types ([MS-RPCH] 2.2.3.5)."""

    RECEIVE_WINDOW_SIZE = 0x0
    FLOW_CONTROL_ACK = 0x1
    CONNECTION_TIMEOUT = 0x2
    COOKIE = 0x3
    CHANNEL_LIFETIME = 0x4
    CLIENT_KEEPALIVE = 0x5
    VERSION = 0x6
    EMPTY = 0x7
    PADDING = 0x8
    NEGATIVE_ANCE = 0x9
    ANCE = 0xA
    CLIENT_ADDRESS = 0xB
    ASSOCIATION_GROUP_ID = 0xC
    DESTINATION = 0xD
    PING_TRAFFIC_SENT_NOTIFY = 0xE


class Destination(IntEnum):
    """Where a forwarded RTS PDU goes ([MS-RPCH] 2.2.3.3)."""

    CLIENT = 0
    IN_PROXY = 1
    SERVER = 2
    OUT_PROXY = 3


# Commands whose body is one 32-bit unsigned integer.
_U32_COMMANDS = frozenset(
    {
        Cmd.RECEIVE_WINDOW_SIZE,
        Cmd.CONNECTION_TIMEOUT,
        Cmd.CHANNEL_LIFETIME,
        Cmd.CLIENT_KEEPALIVE,
        Cmd.VERSION,
        Cmd.DESTINATION,
        Cmd.PING_TRAFFIC_SENT_NOTIFY,
    }
)
_COOKIE_COMMANDS = frozenset({Cmd.COOKIE, Cmd.ASSOCIATION_GROUP_ID})  # body: a 16-byte RTS cookie
_EMPTY_COMMANDS = frozenset({Cmd.EMPTY, Cmd.NEGATIVE_ANCE, Cmd.ANCE})  # no body
_ADDRESS_PADDING = 12  # ClientAddress ends with 12 bytes of padding


@dataclass(frozen=True)
class FlowControlAck:
    """The body of a FlowControlAck command: what the receiver has taken in on one channel."""

    bytes_received: int
    available_window: int
    channel_cookie: bytes


# A command's value: an int (u32 commands), bytes (cookies; Padding's bytes), None (no body),
# FlowControlAck, or an IPv4Address/IPv6Address (ClientAddress).
CommandValue = int | bytes | None | FlowControlAck | ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Command:
    type: Cmd
    value: CommandValue = None


@dataclass(frozen=True)
class RtsPdu:
    flags: int
    commands: tuple[Command, ...] = ()

    def values(self, *types: Cmd) -> tuple[CommandValue, ...]:
        """The command values, checking the commands are exactly `types` in order."""
        if tuple(c.type for c in self.commands) != types:
            names = ", ".join(c.type.name for c in self.commands) or "none"
            raise RtsError(f"RTS commands are {names}; expected {', '.join(t.name for t in types)}")
        return tuple(c.value for c in self.commands)


@dataclass(frozen=True)
class RequestPdu:
    call_id: int
    opnum: int
    stub: bytes = b""
    context_id: int = 0
    pfc_flags: int = WHOLE
    alloc_hint: int = 0
    object_uuid: bytes | None = None  # present when pfc_flags has OBJECT_UUID


@dataclass(frozen=True)
class ResponsePdu:
    call_id: int
    stub: bytes = b""
    context_id: int = 0
    pfc_flags: int = WHOLE
    alloc_hint: int = 0
    cancel_count: int = 0


@dataclass(frozen=True)
class FaultPdu:
    call_id: int
    status: int
    context_id: int = 0
    pfc_flags: int = WHOLE
    alloc_hint: int = 0
    cancel_count: int = 0


Pdu = RtsPdu | RequestPdu | ResponsePdu | FaultPdu


@dataclass(frozen=True)
class Header:
    ptype: int
    pfc_flags: int
    frag_length: int
    auth_length: int
    call_id: int


# -- the common header ----------------------------------------------------------------------------------
def parse_header(data: bytes) -> Header:
    """The common header at the start of `data`, checked enough to know how long the PDU is."""
    if len(data) < HEADER_LENGTH:
        raise RtsError(f"PDU header truncated ({len(data)} of {HEADER_LENGTH} bytes)")
    vers, minor, ptype, pfc, drep, frag_length, auth_length, call_id = _HEADER.unpack_from(data)
    if (vers, minor) != (RPC_VERS, RPC_VERS_MINOR):
        raise RtsError(f"not a connection-oriented RPC PDU (version {vers}.{minor})")
    if drep != DREP_LITTLE_ENDIAN:
        raise RtsError(f"unsupported data representation {drep.hex()}")
    if frag_length < HEADER_LENGTH:
        raise RtsError(f"frag_length {frag_length} is shorter than the header")
    return Header(ptype, pfc, frag_length, auth_length, call_id)


def _header(ptype: int, pfc_flags: int, frag_length: int, call_id: int) -> bytes:
    if frag_length > MAX_FRAG_LENGTH:
        raise RtsError(f"PDU of {frag_length} bytes does not fit one fragment")
    return _HEADER.pack(
        RPC_VERS, RPC_VERS_MINOR, ptype, pfc_flags, DREP_LITTLE_ENDIAN, frag_length, 0, call_id
    )


# -- encoding -------------------------------------------------------------------------------------------
def _encode_command(command: Command) -> bytes:
    kind, value = command.type, command.value
    try:
        if kind in _U32_COMMANDS:
            return _U32.pack(kind) + _U32.pack(value)  # type: ignore[arg-type]
        if kind in _COOKIE_COMMANDS:
            if not isinstance(value, bytes) or len(value) != COOKIE_LENGTH:
                raise RtsError(f"{kind.name} needs a {COOKIE_LENGTH}-byte cookie")
            return _U32.pack(kind) + value
        if kind in _EMPTY_COMMANDS:
            return _U32.pack(kind)
        if kind is Cmd.PADDING:
            padding = value if isinstance(value, bytes) else b""
            return _U32.pack(kind) + _U32.pack(len(padding)) + padding
        if kind is Cmd.FLOW_CONTROL_ACK and isinstance(value, FlowControlAck):
            ack = value
            if len(ack.channel_cookie) != COOKIE_LENGTH:
                raise RtsError("FlowControlAck needs a 16-byte channel cookie")
            return (
                _U32.pack(kind)
                + struct.pack("<II", ack.bytes_received, ack.available_window)
                + ack.channel_cookie
            )
        if kind is Cmd.CLIENT_ADDRESS and isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            family = 0 if value.version == 4 else 1
            return _U32.pack(kind) + _U32.pack(family) + value.packed + bytes(_ADDRESS_PADDING)
    except struct.error as err:
        raise RtsError(f"{kind.name}: {err}") from None
    raise RtsError(f"cannot encode {kind.name} with value {value!r}")


def encode_rts(pdu: RtsPdu) -> bytes:
    body = b"".join(_encode_command(c) for c in pdu.commands)
    frag_length = HEADER_LENGTH + _RTS_HEADER.size + len(body)
    return _header(PType.RTS, WHOLE, frag_length, 0) + _RTS_HEADER.pack(pdu.flags, len(pdu.commands)) + body


def encode_pdu(pdu: Pdu) -> bytes:
    """The bytes of one PDU."""
    try:
        if isinstance(pdu, RtsPdu):
            return encode_rts(pdu)
        if isinstance(pdu, RequestPdu):
            flags = pdu.pfc_flags & ~int(Pfc.OBJECT_UUID)
            extra = b""
            if pdu.object_uuid is not None:
                if len(pdu.object_uuid) != 16:
                    raise RtsError("object UUID must be 16 bytes")
                flags, extra = flags | Pfc.OBJECT_UUID, pdu.object_uuid
            body = _REQUEST.pack(pdu.alloc_hint, pdu.context_id, pdu.opnum) + extra + pdu.stub
            return _header(PType.REQUEST, flags, HEADER_LENGTH + len(body), pdu.call_id) + body
        if isinstance(pdu, ResponsePdu):
            body = _RESPONSE.pack(pdu.alloc_hint, pdu.context_id, pdu.cancel_count, 0) + pdu.stub
            return _header(PType.RESPONSE, pdu.pfc_flags, HEADER_LENGTH + len(body), pdu.call_id) + body
        if isinstance(pdu, FaultPdu):
            body = _FAULT.pack(pdu.alloc_hint, pdu.context_id, pdu.cancel_count, 0, pdu.status, 0)
            return _header(PType.FAULT, pdu.pfc_flags, HEADER_LENGTH + len(body), pdu.call_id) + body
    except struct.error as err:
        raise RtsError(f"field out of range: {err}") from None
    raise RtsError(f"cannot encode {type(pdu).__name__}")


# -- decoding -------------------------------------------------------------------------------------------
def _decode_commands(data: bytes, offset: int, count: int) -> tuple[Command, ...]:
    commands = []
    end = len(data)

    def take(n: int) -> bytes:
        nonlocal offset
        if offset + n > end:
            raise RtsError(f"RTS command truncated at byte {offset}")
        chunk = data[offset : offset + n]
        offset += n
        return chunk

    for _ in range(count):
        raw_type = _U32.unpack(take(4))[0]
        try:
            kind = Cmd(raw_type)
        except ValueError:
            raise RtsError(f"unknown RTS command type {raw_type:#x}") from None
        value: CommandValue = None
        if kind in _U32_COMMANDS:
            value = _U32.unpack(take(4))[0]
        elif kind in _COOKIE_COMMANDS:
            value = take(COOKIE_LENGTH)
        elif kind is Cmd.PADDING:
            value = take(_U32.unpack(take(4))[0])
        elif kind is Cmd.FLOW_CONTROL_ACK:
            received, window = struct.unpack("<II", take(8))
            value = FlowControlAck(received, window, take(COOKIE_LENGTH))
        elif kind is Cmd.CLIENT_ADDRESS:
            family = _U32.unpack(take(4))[0]
            if family not in (0, 1):
                raise RtsError(f"unknown client address type {family}")
            packed = take(4 if family == 0 else 16)
            value = ipaddress.IPv4Address(packed) if family == 0 else ipaddress.IPv6Address(packed)
            take(_ADDRESS_PADDING)
        commands.append(Command(kind, value))
    if offset != end:
        raise RtsError(f"{end - offset} bytes left over after {count} RTS commands")
    return tuple(commands)


def decode_pdu(data: bytes) -> Pdu:
    """One whole PDU (exactly frag_length bytes) as its dataclass."""
    header = parse_header(data)
    if header.frag_length != len(data):
        raise RtsError(f"frag_length {header.frag_length} but {len(data)} bytes given")
    if header.auth_length:
        raise RtsError("authenticated PDUs are not supported (auth_length must be 0)")
    body = data[HEADER_LENGTH:]
    try:
        if header.ptype == PType.RTS:
            if header.pfc_flags != WHOLE or header.call_id != 0:
                raise RtsError("an RTS PDU must be unfragmented with call_id 0")
            flags, count = _RTS_HEADER.unpack_from(body)
            if flags & ~_KNOWN_RTS_FLAGS:
                raise RtsError(f"unknown RTS flags {flags:#x}")
            return RtsPdu(flags, _decode_commands(data, HEADER_LENGTH + _RTS_HEADER.size, count))
        if header.ptype == PType.REQUEST:
            alloc_hint, context_id, opnum = _REQUEST.unpack_from(body)
            stub, object_uuid = body[_REQUEST.size :], None
            if header.pfc_flags & Pfc.OBJECT_UUID:
                if len(stub) < 16:
                    raise RtsError("request PDU truncated in its object UUID")
                object_uuid, stub = stub[:16], stub[16:]
            flags = header.pfc_flags & ~int(Pfc.OBJECT_UUID)
            return RequestPdu(header.call_id, opnum, stub, context_id, flags, alloc_hint, object_uuid)
        if header.ptype == PType.RESPONSE:
            alloc_hint, context_id, cancel_count, _ = _RESPONSE.unpack_from(body)
            stub = body[_RESPONSE.size :]
            return ResponsePdu(header.call_id, stub, context_id, header.pfc_flags, alloc_hint, cancel_count)
        if header.ptype == PType.FAULT:
            alloc_hint, context_id, cancel_count, _, status, _ = _FAULT.unpack_from(body)
            return FaultPdu(header.call_id, status, context_id, header.pfc_flags, alloc_hint, cancel_count)
    except struct.error:
        raise RtsError(f"PDU of type {header.ptype} truncated ({len(data)} bytes)") from None
    raise RtsError(f"unsupported PTYPE {header.ptype}")


# -- cookies --------------------------------------------------------------------------------------------
def new_cookie() -> bytes:
    """A fresh RTS cookie: 16 random bytes, laid out as a GUID ([MS-RPCH] 2.2.3.1)."""
    return uuid.uuid4().bytes_le


def cookie_text(cookie: bytes) -> str:
    """The cookie as the GUID string Windows would print (the lab's session key for a virtual connection)."""
    return str(uuid.UUID(bytes_le=cookie))


# -- the virtual-connection handshake and keep-alives ([MS-RPCH] 2.2.4) -----------------------------------
@dataclass(frozen=True)
class ConnA1:
    version: int
    vc_cookie: bytes
    out_cookie: bytes
    receive_window: int


@dataclass(frozen=True)
class ConnB1:
    version: int
    vc_cookie: bytes
    in_cookie: bytes
    channel_lifetime: int
    client_keepalive_ms: int
    association_group_id: bytes


@dataclass(frozen=True)
class ConnC2:
    version: int
    receive_window: int
    connection_timeout_ms: int


def _expect_flags(data: bytes | Pdu, flags: int, name: str) -> RtsPdu:
    """`data` (bytes or a decoded PDU) as an RTS PDU with these RTS flags."""
    pdu = decode_pdu(data) if isinstance(data, bytes | bytearray) else data
    if not isinstance(pdu, RtsPdu):
        raise RtsError(f"expected an RTS PDU ({name}), got {type(pdu).__name__}")
    if pdu.flags != flags:
        raise RtsError(f"not a {name} PDU (RTS flags {pdu.flags:#x})")
    return pdu


def conn_a1(vc_cookie: bytes, out_cookie: bytes, receive_window: int = 65536) -> bytes:
    """Client -> outbound proxy, the body of RPC_OUT_DATA (76 bytes)."""
    return encode_rts(
        RtsPdu(
            RtsFlag.NONE,
            (
                Command(Cmd.VERSION, RPC_OVER_HTTP_VERSION),
                Command(Cmd.COOKIE, vc_cookie),
                Command(Cmd.COOKIE, out_cookie),
                Command(Cmd.RECEIVE_WINDOW_SIZE, receive_window),
            ),
        )
    )


def parse_conn_a1(data: bytes | Pdu) -> ConnA1:
    pdu = _expect_flags(data, RtsFlag.NONE, "CONN/A1")
    version, vc, out, window = pdu.values(Cmd.VERSION, Cmd.COOKIE, Cmd.COOKIE, Cmd.RECEIVE_WINDOW_SIZE)
    return ConnA1(version, vc, out, window)  # type: ignore[arg-type]


def conn_b1(
    vc_cookie: bytes,
    in_cookie: bytes,
    association_group_id: bytes,
    channel_lifetime: int = 1 << 30,
    client_keepalive_ms: int = 300_000,
) -> bytes:
    """Client -> inbound proxy, the first PDU of the RPC_IN_DATA body."""
    return encode_rts(
        RtsPdu(
            RtsFlag.NONE,
            (
                Command(Cmd.VERSION, RPC_OVER_HTTP_VERSION),
                Command(Cmd.COOKIE, vc_cookie),
                Command(Cmd.COOKIE, in_cookie),
                Command(Cmd.CHANNEL_LIFETIME, channel_lifetime),
                Command(Cmd.CLIENT_KEEPALIVE, client_keepalive_ms),
                Command(Cmd.ASSOCIATION_GROUP_ID, association_group_id),
            ),
        )
    )


def parse_conn_b1(data: bytes | Pdu) -> ConnB1:
    pdu = _expect_flags(data, RtsFlag.NONE, "CONN/B1")
    values = pdu.values(
        Cmd.VERSION,
        Cmd.COOKIE,
        Cmd.COOKIE,
        Cmd.CHANNEL_LIFETIME,
        Cmd.CLIENT_KEEPALIVE,
        Cmd.ASSOCIATION_GROUP_ID,
    )
    return ConnB1(*values)  # type: ignore[arg-type]


def conn_a3(connection_timeout_ms: int) -> bytes:
    """Outbound proxy -> client, first on the OUT stream: how often the client must ping its IN channel."""
    return encode_rts(RtsPdu(RtsFlag.NONE, (Command(Cmd.CONNECTION_TIMEOUT, connection_timeout_ms),)))


def parse_conn_a3(data: bytes | Pdu) -> int:
    """The connection time-out (ms) of a CONN/A3 PDU."""
    pdu = _expect_flags(data, RtsFlag.NONE, "CONN/A3")
    return pdu.values(Cmd.CONNECTION_TIMEOUT)[0]  # type: ignore[return-value]


def conn_c2(receive_window: int, connection_timeout_ms: int) -> bytes:
    """Outbound proxy -> client: the virtual connection is established."""
    return encode_rts(
        RtsPdu(
            RtsFlag.NONE,
            (
                Command(Cmd.VERSION, RPC_OVER_HTTP_VERSION),
                Command(Cmd.RECEIVE_WINDOW_SIZE, receive_window),
                Command(Cmd.CONNECTION_TIMEOUT, connection_timeout_ms),
            ),
        )
    )


def parse_conn_c2(data: bytes | Pdu) -> ConnC2:
    pdu = _expect_flags(data, RtsFlag.NONE, "CONN/C2")
    return ConnC2(*pdu.values(Cmd.VERSION, Cmd.RECEIVE_WINDOW_SIZE, Cmd.CONNECTION_TIMEOUT))  # type: ignore[arg-type]


def ping() -> bytes:
    """The Ping RTS PDU: client -> inbound proxy and outbound proxy -> client, to keep a channel alive."""
    return encode_rts(RtsPdu(RtsFlag.PING))


def is_ping(pdu: Pdu) -> bool:
    return isinstance(pdu, RtsPdu) and pdu.flags == RtsFlag.PING and not pdu.commands


def keepalive(interval_ms: int) -> bytes:
    """The Keep-Alive RTS PDU: the client changes the interval at which it wants keep-alive traffic."""
    return encode_rts(RtsPdu(RtsFlag.OTHER_CMD, (Command(Cmd.CLIENT_KEEPALIVE, interval_ms),)))


def flow_control_ack(destination: Destination, ack: FlowControlAck) -> bytes:
    """The FlowControlAckWithDestination RTS PDU: a receiver acknowledges bytes taken in on a channel."""
    return encode_rts(
        RtsPdu(
            RtsFlag.OTHER_CMD,
            (Command(Cmd.DESTINATION, destination), Command(Cmd.FLOW_CONTROL_ACK, ack)),
        )
    )


# -- RPC calls ------------------------------------------------------------------------------------------
def _split(stub: bytes, max_stub: int) -> list[tuple[int, bytes, int]]:
    """(pfc_flags, chunk, alloc_hint) for each fragment of `stub`; alloc_hint is the stub still to come."""
    chunks = [stub[i : i + max_stub] for i in range(0, len(stub), max_stub)] or [b""]
    out, remaining = [], len(stub)
    for n, chunk in enumerate(chunks):
        flags = (Pfc.FIRST_FRAG if n == 0 else 0) | (Pfc.LAST_FRAG if n == len(chunks) - 1 else 0)
        out.append((flags, chunk, remaining))
        remaining -= len(chunk)
    return out


def request_fragments(
    call_id: int, opnum: int, stub: bytes, context_id: int = 0, max_frag: int = MAX_XMIT_FRAG
) -> list[RequestPdu]:
    """The request PDUs of one call, each at most `max_frag` bytes long."""
    per_frag = max_frag - HEADER_LENGTH - _REQUEST.size
    return [
        RequestPdu(call_id, opnum, chunk, context_id, flags, hint)
        for flags, chunk, hint in _split(stub, per_frag)
    ]


def response_fragments(
    call_id: int, stub: bytes, context_id: int = 0, max_frag: int = MAX_XMIT_FRAG
) -> list[ResponsePdu]:
    """The response PDUs of one call, each at most `max_frag` bytes long."""
    per_frag = max_frag - HEADER_LENGTH - _RESPONSE.size
    return [
        ResponsePdu(call_id, chunk, context_id, flags, hint) for flags, chunk, hint in _split(stub, per_frag)
    ]
