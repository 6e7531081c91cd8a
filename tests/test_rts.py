"""The MS-RPCH RTS / DCE-RPC PDU codec: exact encodings, round trips, and only RtsError on bad input."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caslab import rts

VC, OUT, IN, GROUP = (bytes([n]) * 16 for n in (1, 2, 3, 4))


def test_ping_is_the_20_byte_pdu_of_the_spec():
    # rpc_vers 5.0, PTYPE 20 (rts), FIRST|LAST, little-endian drep, frag_length 20, no auth, call_id 0,
    # then Flags RTS_FLAG_PING and NumberOfCommands 0.
    assert rts.ping() == bytes.fromhex("05001403 10000000 1400 0000 00000000 0100 0000".replace(" ", ""))


def test_conn_a3_carries_one_connection_timeout_command():
    assert rts.conn_a3(720_000) == (
        bytes.fromhex("05001403100000001c0000000000000000000100")
        + struct.pack("<II", rts.Cmd.CONNECTION_TIMEOUT, 720_000)
    )
    assert rts.parse_conn_a3(rts.conn_a3(720_000)) == 720_000


def test_conn_a1_is_76_bytes_and_parses_back():
    data = rts.conn_a1(VC, OUT, 65536)
    assert len(data) == rts.CONN_A1_LENGTH == 76
    assert data[20:28] == struct.pack("<II", rts.Cmd.VERSION, 1)  # the Version command comes first
    assert rts.parse_conn_a1(data) == rts.ConnA1(1, VC, OUT, 65536)


def test_conn_b1_and_c2_parse_back():
    b1 = rts.conn_b1(VC, IN, GROUP, channel_lifetime=1 << 30, client_keepalive_ms=300_000)
    assert len(b1) == 104
    assert rts.parse_conn_b1(b1) == rts.ConnB1(1, VC, IN, 1 << 30, 300_000, GROUP)
    c2 = rts.conn_c2(65536, 720_000)
    assert len(c2) == 44
    assert rts.parse_conn_c2(c2) == rts.ConnC2(1, 65536, 720_000)


def test_a_parser_refuses_the_other_handshake_pdus():
    with pytest.raises(rts.RtsError, match="expected VERSION, COOKIE, COOKIE, RECEIVE_WINDOW_SIZE"):
        rts.parse_conn_a1(rts.conn_b1(VC, IN, GROUP))
    with pytest.raises(rts.RtsError, match="CONN/B1"):
        rts.parse_conn_b1(rts.ping())
    with pytest.raises(rts.RtsError, match="expected an RTS PDU"):
        rts.parse_conn_a1(rts.encode_pdu(rts.RequestPdu(1, 0, b"x")))


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_patched(rts.ping(), 0, b"\x04"), "version 4.0"),
        (_patched(rts.ping(), 4, b"\x00"), "data representation"),
        (_patched(rts.ping(), 3, b"\x01"), "unfragmented"),
        (_patched(rts.ping(), 12, b"\x07"), "call_id 0"),
        (_patched(rts.ping(), 10, b"\x08"), "auth_length"),
        (_patched(rts.ping(), 16, b"\x80"), "unknown RTS flags"),
        (rts.ping()[:19], "frag_length 20 but 19"),
        (rts.ping()[:10], "header truncated"),
        (_patched(rts.ping(), 2, b"\x0b"), "unsupported PTYPE 11"),
        (_patched(rts.conn_a3(1), 20, b"\x0f"), "unknown RTS command type 0xf"),
        (_patched(rts.conn_a3(1), 18, b"\x02"), "truncated"),
        (_patched(rts.conn_a3(1), 18, b"\x00"), "left over"),
    ],
)
def test_bogus_pdus_raise_rts_error(data, message):
    with pytest.raises(rts.RtsError, match=message):
        rts.decode_pdu(data)


def test_request_and_response_layouts():
    request = rts.encode_pdu(rts.RequestPdu(call_id=7, opnum=2, stub=b"abc", context_id=1, alloc_hint=3))
    assert request[:16] == bytes.fromhex("05000003100000001b00000007000000")
    assert request[16:] == struct.pack("<IHH", 3, 1, 2) + b"abc"
    response = rts.encode_pdu(rts.ResponsePdu(call_id=7, stub=b"xy", alloc_hint=2))
    assert response[2] == rts.PType.RESPONSE and response[16:] == struct.pack("<IHBB", 2, 0, 0, 0) + b"xy"
    fault = rts.encode_pdu(rts.FaultPdu(call_id=7, status=0x1C010002))
    assert len(fault) == 32 and struct.unpack_from("<I", fault, 24)[0] == 0x1C010002


def test_long_stubs_are_fragmented_as_windows_does():
    stub = bytes(range(256)) * 80  # 20,480 bytes
    fragments = rts.request_fragments(9, 4, stub)
    encoded = [rts.encode_pdu(f) for f in fragments]
    assert len(fragments) == 4 and all(len(e) <= rts.MAX_XMIT_FRAG for e in encoded)
    assert fragments[0].pfc_flags == rts.Pfc.FIRST_FRAG and fragments[-1].pfc_flags == rts.Pfc.LAST_FRAG
    assert [f.pfc_flags for f in fragments[1:-1]] == [0, 0]
    assert [f.alloc_hint for f in fragments] == [len(stub) - n * len(fragments[0].stub) for n in range(4)]
    assert b"".join(rts.decode_pdu(e).stub for e in encoded) == stub
    assert [r.pfc_flags for r in rts.response_fragments(9, b"")] == [rts.WHOLE]


# -- property-based ----------------------------------------------------------------------------------
U32 = st.integers(0, 2**32 - 1)
COOKIES = st.binary(min_size=16, max_size=16)


def _command(kind: rts.Cmd) -> st.SearchStrategy[rts.Command]:
    if kind in (rts.Cmd.COOKIE, rts.Cmd.ASSOCIATION_GROUP_ID):
        value: st.SearchStrategy = COOKIES
    elif kind in (rts.Cmd.EMPTY, rts.Cmd.ANCE, rts.Cmd.NEGATIVE_ANCE):
        value = st.none()
    elif kind is rts.Cmd.PADDING:
        value = st.binary(max_size=64)
    elif kind is rts.Cmd.FLOW_CONTROL_ACK:
        value = st.builds(rts.FlowControlAck, U32, U32, COOKIES)
    elif kind is rts.Cmd.CLIENT_ADDRESS:
        value = st.ip_addresses().map(ipaddress.ip_address)
    else:
        value = U32
    return value.map(lambda v: rts.Command(kind, v))


COMMANDS = st.sampled_from(list(rts.Cmd)).flatmap(_command)
RTS_PDUS = st.builds(rts.RtsPdu, st.integers(0, 0x7F), st.lists(COMMANDS, max_size=12).map(tuple))
FLAGS = st.integers(0, 0x7F)  # OBJECT_UUID (0x80) is carried by the object_uuid field
RPC_PDUS = st.one_of(
    st.builds(
        rts.RequestPdu,
        call_id=U32,
        opnum=st.integers(0, 0xFFFF),
        stub=st.binary(max_size=300),
        context_id=st.integers(0, 0xFFFF),
        pfc_flags=FLAGS,
        alloc_hint=U32,
        object_uuid=st.none() | COOKIES,
    ),
    st.builds(
        rts.ResponsePdu,
        call_id=U32,
        stub=st.binary(max_size=300),
        context_id=st.integers(0, 0xFFFF),
        pfc_flags=st.integers(0, 0xFF),
        alloc_hint=U32,
        cancel_count=st.integers(0, 0xFF),
    ),
    st.builds(
        rts.FaultPdu,
        call_id=U32,
        status=U32,
        context_id=st.integers(0, 0xFFFF),
        pfc_flags=st.integers(0, 0xFF),
        alloc_hint=U32,
        cancel_count=st.integers(0, 0xFF),
    ),
)


@given(RTS_PDUS | RPC_PDUS)
def test_every_pdu_round_trips(pdu):
    data = rts.encode_pdu(pdu)
    assert rts.parse_header(data).frag_length == len(data)
    assert rts.decode_pdu(data) == pdu


@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_rts_error(data):
    for parse in (rts.decode_pdu, rts.parse_conn_a1, rts.parse_conn_b1, rts.parse_conn_a3, rts.parse_conn_c2):
        with contextlib.suppress(rts.RtsError):
            parse(data)


@given(RTS_PDUS | RPC_PDUS, st.data())
def test_damaged_pdus_only_ever_raise_rts_error(pdu, data):
    """Truncate, extend or flip bytes of a valid PDU: it decodes (to something) or raises RtsError."""
    encoded = bytearray(rts.encode_pdu(pdu))
    damage = data.draw(st.sampled_from(["truncate", "extend", "flip"]))
    if damage == "truncate":
        encoded = encoded[: data.draw(st.integers(0, len(encoded) - 1))]
    elif damage == "extend":
        encoded += data.draw(st.binary(min_size=1, max_size=20))
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            encoded[data.draw(st.integers(0, len(encoded) - 1))] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(rts.RtsError):
        assert isinstance(
            rts.decode_pdu(bytes(encoded)), rts.RtsPdu | rts.RequestPdu | rts.ResponsePdu | rts.FaultPdu
        )


@given(RTS_PDUS)
def test_a_pdu_too_long_for_one_fragment_is_refused_when_encoded(pdu):
    big = rts.RtsPdu(pdu.flags, (*pdu.commands, rts.Command(rts.Cmd.PADDING, bytes(70_000))))
    with pytest.raises(rts.RtsError, match="does not fit"):
        rts.encode_pdu(big)
