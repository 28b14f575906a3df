"""Every key, read from the bindings themselves (nothing to keep in sync by hand)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

SCREEN_KEYS = [
    ("Everywhere", "1 dashboard   2 requests   3 aliases   4 services   5 GPU   ? help   ctrl+p palette   "
                   "q quit (stops the serve the panel started)"),
    ("Dashboard", "enter detail (the newest requests as they stream; wait = under way)"),
    ("Requests", "enter detail   / filter   esc clear   e export (.csv/.jsonl)   detail: c copy as curl"),
    ("Aliases", "a add   e/enter edit   x delete   shift+up/down (K/J) reorder   m map an unknown model   "
                "ctrl+s save and apply   u revert"),
    ("Services", "r restart selected   R restart all   s stop/start   f follow log   / search log"),
    ("GPU", "w add --swa-full to a sliding-window model's llama-server (one ccbridge runs) and restart it"),
]


class HelpScreen(ModalScreen[None]):
    """Keys per screen; the mouse works everywhere (click tabs in the footer, rows, buttons)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="dialog"):
            yield Static("[b]ccbridge panel[/b]: Claude Code -> proxy -> LiteLLM -> llama-server\n")
            for title, keys in SCREEN_KEYS:
                yield Static(f"[b]{title}[/b]  {keys}", classes="help-keys")
        yield Footer(compact=True)
