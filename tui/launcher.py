"""`ccbridge`: with no subcommand open the panel, otherwise run the command line unchanged.

Textual is imported only on the panel's path, so `ccbridge serve` starts as fast as before.
"""

from __future__ import annotations

import sys
from pathlib import Path

SUBCOMMANDS = {"serve", "env", "claude", "import", "doctor"}


def _panel_args(argv: list[str]) -> Path | None:
    import argparse

    parser = argparse.ArgumentParser(prog="ccbridge", description="Open ccbridge's control panel. "
                                     "Subcommands: " + ", ".join(sorted(SUBCOMMANDS))
                                     + " (`ccbridge SUBCOMMAND --help`; `ccbridge claude` hands its "
                                     "arguments to Claude Code).")
    parser.add_argument("--config", help="ccbridge.yaml to use (default: the user config dir)")
    args = parser.parse_args(argv)
    return Path(args.config).expanduser() if args.config else None


def run_panel(config_path: Path | None) -> int:
    from backend import paths
    from backend.config import ConfigError, load_config
    from backend.runner import BridgeThread
    from tui.app import PanelApp
    from tui.bridge import PanelBridge

    path = config_path or paths.default_config_file()
    if not path.exists():
        app = PanelApp(None, setup_path=path)
    else:
        try:
            config = load_config(path)
        except ConfigError as exc:
            print(f"ccbridge: {exc}", file=sys.stderr)
            return 2
        app = PanelApp(PanelBridge(BridgeThread(config)))
    try:
        app.run()
    finally:
        if app.bridge is not None:
            app.bridge.backend.stop()  # idempotent: also when the app died before its own quit
    return 0


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
    if _subcommand(argv) or any(a in ("--version", "-V") for a in argv):
        from backend.cli import main as cli_main

        return cli_main(argv)
    return run_panel(_panel_args(argv))


if __name__ == "__main__":
    sys.exit(main())
