"""The console's HTML: the login form, one shell per page, and the static assets.

Pages are plain strings rendered here; the data comes from ``/console/api/*`` through the
console's own script, so no page carries a key or a figure in its source. Every response
sets a Content-Security-Policy that allows scripts, styles and connections from this origin
only (no inline script or style, no other origin), and cannot be framed.
"""

from __future__ import annotations

import html
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from litestar import Request, Response, get, post
from litestar.params import FromPath

from backends.errors import AuthenticationError, NotFoundError
from gateway.console.session import COOKIE, SESSION_TTL_S, CsrfError, Session, same_origin, sessions_of
from gateway.state import Gateway

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
"""The console's Content-Security-Policy."""
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "x-frame-options": "DENY", "referrer-policy": "same-origin", "cache-control": "no-store"}
PAGES = {"workers": "Workers", "routes": "Routes", "canaries": "Canaries", "policy": "Policy", "usage": "Usage"}
"""The console's pages, by path segment."""
_STATIC = {
    "console.css": "text/css", "console.js": "text/javascript", "charts.js": "text/javascript",
    "vendor/uPlot.iife.min.js": "text/javascript", "vendor/uPlot.min.css": "text/css",
}
_BODIES = {
    "workers": '<p class="hint">Live: refreshed every 3 s. Hit rate: cached prompt tokens / prompt tokens '
               'answered by the worker since the gateway started.</p><div id="workers"></div>'
               '<h2>Prefix-cache hit rate</h2><div class="chart" id="hit-chart"></div>',
    "routes": '<p class="hint">Difficulty routes: tier split against the target, score distribution, '
              'threshold, and what the cheap tier saved against the strong model.</p><div id="routes"></div>',
    "canaries": '<div id="canaries"></div>',
    "policy": '<dl id="policy-active"></dl><h2>Edit</h2><p class="hint">Checked as you type; nothing changes '
              'until you apply.</p><textarea id="policy-editor" spellcheck="false" rows="24"></textarea>'
              '<ul id="policy-problems"></ul><h2>Diff against the active policy</h2><pre id="policy-diff"></pre>'
              '<h2>Replay estimate</h2><p id="policy-replay-note" class="hint"></p>'
              '<button id="policy-replay" type="button">Replay recorded traffic</button>'
              '<div id="policy-replay-out"></div><p><button id="policy-apply" type="button" class="danger">'
              'Apply</button> <span id="policy-status"></span></p>',
    "usage": '<h2>Spend per tenant and day (USD)</h2><div class="chart" id="usage-tenants"></div>'
             '<h2>Tokens per model and day</h2><div class="chart" id="usage-models"></div>'
             '<h2>Top tenants today</h2><table id="top-tenants"></table>',
}


def secured(response: Response[Any]) -> Response[Any]:
    """``response`` with the console's security headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def _admin_sha256(request: Request[Any, Any, Any]) -> str:
    gateway: Gateway = request.app.state.gateway
    admin = gateway.runtime.policy.admin_key_sha256
    if admin is None:
        raise NotFoundError("Unknown route.")  # no admin key: there is no console
    return admin


def _document(title: str, body: str, *, csrf: str = "", page: str = "") -> str:
    meta = f'<meta name="csrf-token" content="{csrf}">' if csrf else ""
    nav = ""
    if page:
        links = "".join(f'<a href="/console/{name}"{" aria-current=page" if name == page else ""}>{label}</a>'
                        for name, label in PAGES.items())
        nav = (f'<nav><strong>Switchyard</strong>{links}<form method="post" action="/console/logout">'
               f'<input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form></nav>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Switchyard · {title}</title>{meta}'
            '<link rel="icon" href="data:,">'
            '<link rel="stylesheet" href="/console/static/vendor/uPlot.min.css">'
            '<link rel="stylesheet" href="/console/static/console.css">'
            '<script src="/console/static/vendor/uPlot.iife.min.js" defer></script>'
            '<script src="/console/static/charts.js" defer></script>'
            '<script src="/console/static/console.js" defer></script></head>'
            f'<body data-page="{page}">{nav}<main><h1>{title}</h1>{body}</main></body></html>')


def _html(text: str, status: int = 200, cookie: str | None = None) -> Response[Any]:
    return secured(Response(text, status_code=status, media_type="text/html",
                            headers={"set-cookie": cookie} if cookie is not None else None))


def _cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> str:
    secure = "; Secure" if request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https" else ""
    return f"{COOKIE}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


def _login_page(message: str = "") -> str:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return _document("Log in", note + '<form method="post" action="/console/login" class="login">'
                     '<label>Admin key <input type="password" name="key" autocomplete="current-password" '
                     'required autofocus></label><button type="submit">Log in</button></form>')


def _redirect(location: str, cookie: str | None = None) -> Response[Any]:
    headers = {"location": location}
    if cookie is not None:
        headers["set-cookie"] = cookie
    return secured(Response(b"", status_code=303, headers=headers))


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", errors="replace"), max_num_fields=4)
    return {name: values[0] for name, values in fields.items() if values}


@get("/console", include_in_schema=False)
async def console_home(request: Request[Any, Any, Any]) -> Response[Any]:
    """The console's first page."""
    _admin_sha256(request)
    return _redirect("/console/workers")


@get("/console/login", include_in_schema=False)
async def login_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """The login form: the admin key, once."""
    _admin_sha256(request)
    return _html(_login_page())


@post("/console/login", include_in_schema=False)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    """Check the admin key and give a session cookie for it."""
    admin = _admin_sha256(request)
    if not same_origin(request):
        return _html(_login_page("Log in from this console's own page."), 403)
    gateway: Gateway = request.app.state.gateway
    key = (await _form(request)).get("key", "")
    try:
        gateway.runtime.keyring.check_admin("Bearer " + key, admin)
    except AuthenticationError:
        return _html(_login_page("That is not the admin key."), 401)
    cookie, _ = await sessions_of(request).issue(admin)
    return _redirect("/console/workers", _cookie(request, cookie, SESSION_TTL_S))


@post("/console/logout", include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    """End the session in this browser (the form carries the CSRF token)."""
    admin = _admin_sha256(request)
    session = await sessions_of(request).verify(request.cookies.get(COOKIE), admin)
    if session is not None and ((await _form(request)).get("csrf") != session.csrf or not same_origin(request)):
        raise CsrfError("Log out from a page of this console.")
    return _redirect("/console/login", _cookie(request, "", 0))


async def _session(request: Request[Any, Any, Any]) -> Session | None:
    return await sessions_of(request).verify(request.cookies.get(COOKIE), _admin_sha256(request))


@get("/console/{page:str}", include_in_schema=False)
async def console_page(request: Request[Any, Any, Any], page: FromPath[str]) -> Response[Any]:
    """One of the console's pages; the login form first without a session."""
    if page not in PAGES:
        raise NotFoundError("Unknown route.")
    session = await _session(request)
    if session is None:
        return _redirect("/console/login")
    return _html(_document(PAGES[page], _BODIES[page], csrf=session.csrf, page=page))


@get("/console/static/{name:path}", include_in_schema=False)
async def console_static(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    """The console's script, styles and vendored chart library (a fixed list of files)."""
    _admin_sha256(request)
    name = name.lstrip("/")
    media_type = _STATIC.get(name)
    if media_type is None:
        raise NotFoundError("Unknown route.")
    body = resources.files("gateway.console").joinpath("static", *name.split("/")).read_bytes()
    response = secured(Response(body, media_type=media_type))
    response.headers["cache-control"] = "no-cache"
    return response


PAGE_HANDLERS = (console_home, login_form, login, logout, console_page, console_static)
"""The console's page handlers, to register in ``create_app``."""
