"""Parsing a client's XML body (EWS's SOAP, Autodiscover's POX) with the standard library, safely.

A document type declaration is refused outright (SOAP forbids one and Exchange's clients never send
one), so no entity, internal or external, is ever declared or expanded: the known XML bombs cannot go
off. Any bad input raises `XmlRejected` and nothing else, so a service turns it into its own error.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET


class XmlRejected(ValueError):
    """A body that is not a well-formed XML document, or carries a DTD. `position` is (line, column)
    where the parser stopped, (0, 0) when it does not say."""

    def __init__(self, message: str, position: tuple[int, int] = (0, 0)) -> None:
        super().__init__(message)
        self.position = position


class _NoDtdTreeBuilder(ET.TreeBuilder):
    def doctype(self, name: str, pubid: str, system: str) -> None:
        raise XmlRejected("a document type declaration (DTD) is not allowed")


def parse_untrusted_xml(body: bytes) -> ET.Element:
    """The root element of `body`; XmlRejected on any bad input."""
    parser = ET.XMLParser(target=_NoDtdTreeBuilder())
    try:
        parser.feed(body)
        return parser.close()
    except ET.ParseError as err:
        raise XmlRejected(str(err), err.position) from None
    except LookupError as err:  # an encoding the XML declaration names but Python does not know
        raise XmlRejected(str(err)) from None
