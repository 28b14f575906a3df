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
import sys

from tui.connection import DEFAULT_URL, config_path, link_for_config, target

PANEL_COMMANDS = {"attach", "web"}


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

    path = config_path(args.config)
    if not path.exists():
        return _run_app(PanelApp(None, setup_path=path, yield_cpu=True))
    try:
        link = link_for_config(path)
    except ConfigError as exc:
        print(f"ccbridge: {exc}", file=sys.stderr)
        return 2
    return _run_app(PanelApp(None, link=link, yield_cpu=True))


def _attach_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccbridge attach", description="Open the panel on a running `ccbridge serve` (here, or through an "
        "SSH tunnel: ssh -N -L 8082:127.0.0.1:8082 gpu-box). Starts nothing; quitting leaves serve running.")
    parser.add_argument("url", nargs="?", help=f"the serve's address (default: the config's proxy, else {DEFAULT_URL})")
    parser.add_argument("--key", help="the serve's proxy.api_key (default: $ANTHROPIC_AUTH_TOKEN or "
                        "$ANTHROPIC_API_KEY; prefer those: a --key is visible in the process list)")
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser


def run_attach(argv: list[str]) -> int:
    args = _attach_parser().parse_args(argv)
    from backend.api.link import ServeLink
    from tui.app import PanelApp

    url, key = target(args.url, args.key, args.config)
    return _run_app(PanelApp(None, link=ServeLink(url, key, spawn=False), yield_cpu=True))


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
