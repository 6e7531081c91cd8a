"""The WBXML codec: the MS-ASWBXML worked example, round trips, and malformed input."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from caslab.wbxml import MAX_DEPTH, TOKENS, E, Element, WbxmlError, decode, encode

# [MS-ASWBXML] section 3: a Sync response adding a contact, as XML and as the spec's bytes.
SPEC_EXAMPLE = bytes.fromhex(
    "03 01 6A 00 45 5C 4F 50 03 43 6F 6E 74 61 63 74 73 00 01 4B 03 32 00 01 52 03 32 00 01 4E 03 31"
    " 00 01 56 47 4D 03 32 3A 31 00 01 5D 00 11 4A 46 03 31 00 01 4C 03 30 00 01 4D 03 31 00 01 01 00"
    " 01 5E 03 46 75 6E 6B 2C 20 44 6F 6E 00 01 5F 03 44 6F 6E 00 01 69 03 46 75 6E 6B 00 01 00 11 56"
    " 03 31 00 01 01 01 01 01 01 01"
)
SPEC_TREE = E(
    "AirSync:Sync",
    E(
        "AirSync:Collections",
        E(
            "AirSync:Collection",
            E("AirSync:Class", "Contacts"),
            E("AirSync:SyncKey", "2"),
            E("AirSync:CollectionId", "2"),
            E("AirSync:Status", "1"),
            E(
                "AirSync:Commands",
                E(
                    "AirSync:Add",
                    E("AirSync:ServerId", "2:1"),
                    E(
                        "AirSync:ApplicationData",
                        E(
                            "AirSyncBase:Body",
                            E("AirSyncBase:Type", "1"),
                            E("AirSyncBase:EstimatedDataSize", "0"),
                            E("AirSyncBase:Truncated", "1"),
                        ),
                        E("Contacts:FileAs", "Funk, Don"),
                        E("Contacts:FirstName", "Don"),
                        E("Contacts:LastName", "Funk"),
                        E("AirSyncBase:NativeBodyType", "1"),
                    ),
                ),
            ),
        ),
    ),
)


def test_spec_example_decodes_to_its_xml():
    assert decode(SPEC_EXAMPLE) == SPEC_TREE


def test_spec_example_encodes_to_the_spec_bytes():
    assert encode(SPEC_TREE) == SPEC_EXAMPLE


def test_empty_elements_opaque_data_and_page_switches():
    tree = E("Provision:Provision", E("AirSync:GetChanges"), E("Email:MIMEData", b"\x00\xff\x01"))
    data = encode(tree)
    # 0x05 + 0x40 on page 14; SWITCH_PAGE 0; GetChanges (0x13) without content; SWITCH_PAGE 2; MIMEData.
    assert data.startswith(bytes.fromhex("03 01 6A 00 00 0E 45 00 00 13 00 02 76 C3 03 00 FF 01 01"))
    assert decode(data) == tree


def test_find_and_findtext_walk_paths():
    collection = SPEC_TREE.find("AirSync:Collections/AirSync:Collection")
    assert collection is not None and collection.findtext("AirSync:SyncKey") == "2"
    assert SPEC_TREE.findtext("AirSync:Collections/AirSync:Nothing") is None
    assert [e.text for e in collection.findall("AirSync:Commands/AirSync:Add/AirSync:ServerId")] == ["2:1"]
    assert E("AirSync:Sync", E("AirSync:GetChanges")).findtext("AirSync:GetChanges") == ""


def test_text_split_over_several_tokens_is_joined():
    data = bytes.fromhex("03 01 6A 00 4B 03 61 00 03 62 00 01")  # <SyncKey>"a" "b"</SyncKey>
    assert decode(data) == E("AirSync:SyncKey", "ab")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (bytes.fromhex("03 01 6A 00 45"), "truncated"),
        (bytes.fromhex("03 01 6A 00 45 01 45 01"), "after the root"),
        (bytes.fromhex("03 01 04 00 45 01"), "UTF-8"),
        (bytes.fromhex("04 01 6A 00 45 01"), "version"),
        (bytes.fromhex("03 01 6A 00 00 03 45 01"), "code page 3"),
        (bytes.fromhex("03 01 6A 00 7F 01"), "unknown tag"),
        (bytes.fromhex("03 01 6A 00 C5 01 01"), "attributes"),
        (bytes.fromhex("03 01 6A 00 45 83 00 01"), "not used"),
        (bytes.fromhex("03 01 6A 00 45 03 61 00 4B 01 01"), "text and child"),
        (bytes.fromhex("03 01 6A 00 4B 03 61 00 C3 01 62 01"), "opaque"),
        (bytes.fromhex("03 01 6A 00 4B 03 61 62 01"), "unterminated"),
        (bytes.fromhex("03 01 6A 00 4B 03 FF 00 01"), "not UTF-8"),
        (bytes.fromhex("03 01 6A 00 4B C3 9F FF FF FF 7F"), "above 32 bits"),
        (bytes.fromhex("03 01 6A 00 4B C3 85 00 61 01"), "truncated"),
        (bytes.fromhex("03 81 81 81 81 81 01 6A 00 45 01"), "longer than 5 bytes"),
        (bytes.fromhex("03 01 6A 00 03 61 00"), "outside the root"),
        (bytes.fromhex("03 01 6A 00") + b"\x45" * (MAX_DEPTH + 1), "nesting"),
    ],
)
def test_malformed_input_raises_wbxml_error_saying_why(data, reason):
    with pytest.raises(WbxmlError, match=reason):
        decode(data)


def test_unencodable_trees_raise_wbxml_error():
    with pytest.raises(WbxmlError, match="unknown tag"):
        encode(E("AirSync:NoSuchTag"))
    with pytest.raises(WbxmlError, match="NUL"):
        encode(E("AirSync:SyncKey", "a\0b"))
    with pytest.raises(WbxmlError, match="Unicode"):
        encode(E("AirSync:SyncKey", "\ud800"))
    with pytest.raises(WbxmlError, match="text and child"):
        encode(Element("AirSync:Sync", (E("AirSync:Status", "1"),), "x"))
    deep = E("AirSync:Sync")
    for _ in range(MAX_DEPTH):
        deep = E("AirSync:Sync", deep)
    with pytest.raises(WbxmlError, match="nesting"):
        encode(deep)


# Trees of known tags: a leaf holds no text, a string without NUL or surrogates, or opaque bytes.
_TAGS = st.sampled_from(sorted(TOKENS))
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)
_LEAF = st.builds(Element, _TAGS, st.just(()), st.none() | _TEXT | st.binary(max_size=30))
_TREE = st.recursive(
    _LEAF,
    lambda inner: st.builds(Element, _TAGS, st.lists(inner, min_size=1, max_size=4).map(tuple)),
    max_leaves=25,
)


def decode_or_error(data: bytes) -> Element | WbxmlError:
    """The tree, or the WbxmlError decode raised; any other exception escapes and fails the test."""
    try:
        return decode(data)
    except WbxmlError as err:
        return err


@settings(max_examples=200)
@given(_TREE)
def test_encode_then_decode_gives_the_same_tree(tree):
    assert decode(encode(tree)) == tree


@settings(max_examples=500)
@given(st.binary(max_size=200))
@example(b"\x03\x01\x6a\x00")
@example(b"\x03\x01\x6a\x00\x00\x11")
def test_random_bytes_decode_or_raise_wbxml_error(data):
    assert isinstance(decode_or_error(data), Element | WbxmlError)


@settings(max_examples=300)
@given(_TREE, st.data())
def test_damaged_documents_decode_or_raise_wbxml_error(tree, data):
    """Random bytes rarely get past the header; damaging real documents reaches deeper states."""
    raw = bytearray(encode(tree))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[position] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[position:]
            if not raw:
                break
        else:
            raw.insert(position, data.draw(st.integers(0, 255)))
    assert isinstance(decode_or_error(bytes(raw)), Element | WbxmlError)
