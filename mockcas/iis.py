"""The answers IIS gives in front of every Exchange 2010 virtual directory: 401 with a Basic challenge,
404, 405 and 413, each with IIS's text. One place, so every service of the mock CAS answers them alike,
as the one IIS of a real CAS does. Each service still notes its own ledger row for them.
"""

from __future__ import annotations

from aiohttp import web


def unauthorized(realm: str) -> web.Response:
    """401 asking for Basic credentials: the answer to a request without valid ones."""
    return web.Response(
        status=401,
        headers={"WWW-Authenticate": f'Basic realm="{realm}"'},
        text="401 - Unauthorized: Access is denied due to invalid credentials.",
    )


def not_found() -> web.Response:
    return web.Response(status=404, text="404 - File or directory not found.")


def method_not_allowed(allowed: str) -> web.Response:
    """405, naming the methods the resource takes (`allowed`, e.g. "GET, POST") in the Allow header."""
    return web.Response(
        status=405,
        headers={"Allow": allowed},
        text="405 - HTTP verb used to access this page is not allowed.",
    )


def entity_too_large() -> web.Response:
    """413: a body over the CAS's limit (aiohttp raises HTTPRequestEntityTooLarge while reading it)."""
    return web.Response(status=413, text="413 - Request entity too large.")
