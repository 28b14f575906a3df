"""`ccbridge web`: the panel in a browser, served by textual-serve.

Each browser tab runs its own `ccbridge attach` against the same serve (the
one on the configured port, started here in the background when none runs,
or the URL given). It listens on loopback unless told otherwise: the web view
has no login of its own and drives everything the panel drives, so the way
to reach it from another machine is an SSH tunnel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.config.model import LOOPBACK_HOSTS
from tui.connection import config_path, target

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_PORT = 8090
_GOOGLE_FONTS = '''    <link
      rel="stylesheet"
      href="https://fonts.googleapis.com/css?family=Roboto%20Mono"
    />'''
# The page textual-serve ships asks Google for its font; the same font is in its static folder.
_LOCAL_FONT = '''    <style>
      @font-face { font-family: "Roboto Mono";
                   src: url("{{ config.static.url }}fonts/RobotoMono-VariableFont_wght.ttf"); }
    </style>'''


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccbridge web", description="Serve the panel in a browser (textual-serve). Without URL it uses the "
        "ccbridge serve on the configured port and starts one when none runs (stopped again when this exits).")
    parser.add_argument("url", nargs="?", help="a running serve to show instead (never started here)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--open", action="store_true", help="allow a --host other machines can reach: the page "
                        "has no login and controls ccbridge, so prefer an SSH tunnel")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a host name the browser may reach the page by besides loopback and --host (repeat "
                        "for more); any other name is refused, as a web page using DNS rebinding would send")
    parser.add_argument("--key", help="the serve's proxy.api_key (default: the config's, $ANTHROPIC_AUTH_TOKEN "
                        "or $ANTHROPIC_API_KEY)")
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser


def page_templates(folder: Path) -> Path:
    """textual-serve's page, with its font taken from its own static folder (no request leaves the machine)."""
    import textual_serve

    source = Path(textual_serve.__file__).parent / "templates" / "app_index.html"
    text = source.read_text(encoding="utf-8").replace(_GOOGLE_FONTS, _LOCAL_FONT)
    (folder / "app_index.html").write_text(text, encoding="utf-8")
    return folder


def host_guard(bound: str, allowed: Iterable[str] = ()) -> Any:
    """aiohttp middleware refusing a foreign `Host` (DNS rebinding) or `Origin` (a page elsewhere opening
    the panel's websocket, which browsers allow cross-site): the panel drives all of ccbridge."""
    from aiohttp import web

    from backend.proxy.hostcheck import HostPolicy, refusal

    policy = HostPolicy.of(bound, allowed)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        why = refusal(policy, request.method, request.path, request.headers, "ccbridge web --allow-host",
                      origin_always=True)
        if why is not None:
            return web.Response(status=why[0], text=why[1] + "\n")
        return await handler(request)

    return guard


def guarded_server(command: str, *, host: str, port: int, templates_path: Path, allowed: Iterable[str] = ()) -> Any:
    """textual-serve's `Server` with `host_guard` in front of every route."""
    from textual_serve.server import Server

    class GuardedServer(Server):
        async def _make_app(self) -> web.Application:  # textual-serve 1.1.3 has no public hook for middleware
            app = await super()._make_app()
            app.middlewares.append(host_guard(host, allowed))
            return app

    return GuardedServer(command, host=host, port=port, title="ccbridge", templates_path=templates_path)


def run_web(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.host not in LOOPBACK_HOSTS and not args.open:
        print(f"ccbridge web: --host {args.host} can be reached from other machines, and the web panel has no "
              "login: anyone who reaches it controls ccbridge. Keep the default (127.0.0.1) and use an SSH tunnel "
              f"(ssh -N -L {args.port}:127.0.0.1:{args.port} <host>), or add --open if you mean it.", file=sys.stderr)
        return 2
    from backend.api.link import ServeLink
    from backend.control import ControlUnavailable

    url, key = target(args.url, args.key, args.config)
    link = ServeLink(url, key, spawn=False) if args.url else None
    path = config_path(args.config)
    if link is None:
        if not path.exists():
            print(f"ccbridge web: no config at {path}; run `ccbridge` once (its setup screen writes one) or give "
                  "the URL of a running serve", file=sys.stderr)
            return 2
        link = ServeLink(url, key, config_path=path, spawn=True)

    async def connect() -> str:
        try:
            return await link.connect()
        finally:
            await link.client.aclose()

    try:
        how = asyncio.run(connect())
    except ControlUnavailable as exc:
        print(f"ccbridge web: {exc}", file=sys.stderr)
        return 2
    if key:
        os.environ["ANTHROPIC_AUTH_TOKEN"] = key  # each tab's `ccbridge attach` reads it (never on a command line)
    command = f"{shlex.quote(sys.executable)} -m tui.launcher attach {shlex.quote(url)}"
    print(f"ccbridge web: {'started' if how == 'started' else 'using'} ccbridge serve at {url}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="ccbridge-web-") as folder:
            server = guarded_server(command, host=args.host, port=args.port,
                                    templates_path=page_templates(Path(folder)), allowed=args.allow_host)
            server.serve()
    finally:
        link.stop()  # only what was started here
    return 0
