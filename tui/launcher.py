"""`ccbridge`: the panel (no command, `attach`, `web`); every other command goes to `backend.cli` unchanged.

- `ccbridge [--config FILE]`: the panel over the `ccbridge serve` already on the
  configured port, or over one started here in the background (quitting stops it;
  a crash of the panel leaves it serving).
- `ccbridge attach [URL] [--key KEY]`: the panel over a running serve (here, or
  through an SSH tunnel); starts nothing, and quitting leaves it running.
- `ccbridge web [URL]`: the panel in a browser (textual-serve), loopback only by default.

Textual is imported only on these paths, so `ccbridge serve` starts as fast as before.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.api.link import ServeLink

PANEL_COMMANDS = {"attach", "web"}
DEFAULT_URL = "http://127.0.0.1:8082"


def _config_path(value: str | None) -> Path:
    from backend import paths

    return Path(value).expanduser() if value else paths.default_config_file()


def url_for(config_path: Path) -> tuple[str, str | None]:
    """The serve URL and key a config file names (proxy.host/port, proxy.api_key)."""
    from backend.config import load_config

    config = load_config(config_path)
    host = config.proxy.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.proxy.port}", config.proxy.api_key


def link_for_config(path: Path) -> ServeLink:
    """A link that attaches to the serve on the config's port, or starts one for that config."""
    from backend.api.link import ServeLink

    url, key = url_for(path)
    return ServeLink(url, key, config_path=path, spawn=True)


def key_from_env(given: str | None) -> str | None:
    return given or os.environ.get("ANTHROPIC_AUTH_TOKEN") or os.environ.get("ANTHROPIC_API_KEY") or None


def _run_app(app) -> int:  # type: ignore[no-untyped-def]
    """Run the panel; after a crash, say what was left serving and how to reach it."""
    try:
        app.run()
    finally:
        link = app.link
        if link is not None and link.started_here and not app.clean_exit:
            proc = link.process
            print(f"ccbridge: the panel ended unexpectedly; ccbridge serve (pid {proc.pid if proc else '?'}) keeps "
                  f"serving at {link.url}. `ccbridge attach {link.url}` reopens the panel; "
                  f"`kill {proc.pid if proc else '<pid>'}` stops it (log: {link.log_path}).", file=sys.stderr)
    return 0 if app.clean_exit else int(app.return_code or 1)


def run_panel(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ccbridge", description="Open ccbridge's control panel over the ccbridge serve on the configured "
        "port, starting one in the background when none runs (q stops what the panel started). Other "
        "commands: serve, attach, web, claude, env, statusline, stop, export, import, doctor "
        "(ccbridge COMMAND --help).")
    parser.add_argument("--config", help="ccbridge.yaml to use (default: the user config dir)")
    args = parser.parse_args(argv)
    from backend.config import ConfigError
    from tui.app import PanelApp

    path = _config_path(args.config)
    if not path.exists():
        return _run_app(PanelApp(None, setup_path=path))
    try:
        link = link_for_config(path)
    except ConfigError as exc:
        print(f"ccbridge: {exc}", file=sys.stderr)
        return 2
    return _run_app(PanelApp(None, link=link))


def _attach_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccbridge attach", description="Open the panel on a running `ccbridge serve` (here, or through an "
        "SSH tunnel: ssh -N -L 8082:127.0.0.1:8082 gpu-box). Starts nothing; quitting leaves serve running.")
    parser.add_argument("url", nargs="?", help=f"the serve's address (default: the config's proxy, else {DEFAULT_URL})")
    parser.add_argument("--key", help="the serve's proxy.api_key (default: $ANTHROPIC_AUTH_TOKEN or "
                        "$ANTHROPIC_API_KEY; prefer those: a --key is visible in the process list)")
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser


def _target(url: str | None, key: str | None, config: str | None) -> tuple[str, str | None]:
    """The URL and key to attach to: given, else the config's, else the default."""
    if url:
        return url, key_from_env(key)
    path = _config_path(config)
    if path.exists():
        from backend.config import ConfigError

        try:
            cfg_url, cfg_key = url_for(path)
            return cfg_url, key_from_env(key) or cfg_key
        except ConfigError:
            pass
    return DEFAULT_URL, key_from_env(key)


def run_attach(argv: list[str]) -> int:
    args = _attach_parser().parse_args(argv)
    from backend.api.link import ServeLink
    from tui.app import PanelApp

    url, key = _target(args.url, args.key, args.config)
    return _run_app(PanelApp(None, link=ServeLink(url, key, spawn=False)))


def run_web(argv: list[str]) -> int:
    from tui.web import run_web as serve_web

    return serve_web(argv)


def _subcommand(argv: list[str]) -> str | None:
    """The first word that is not an option or the value of --config."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("-"):
            return arg  # unknown words go to the command line, which says what it accepts
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _subcommand(argv)
    if command == "statusline":  # Claude Code runs it every second: nothing but the standard library
        from backend.statusline import main as statusline_main

        return statusline_main([a for a in argv if a != "statusline"])
    if command in PANEL_COMMANDS:
        rest = list(argv)
        rest.remove(command)
        return run_attach(rest) if command == "attach" else run_web(rest)
    if command or any(a in ("--version", "-V") for a in argv):
        from backend.cli import main as cli_main

        return cli_main(argv)
    return run_panel(argv)


if __name__ == "__main__":
    sys.exit(main())
