"""Every panel action in the command palette (ctrl+p)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, help, action run on the app; "screen." actions run on the screen that has them)
PANEL_COMMANDS: list[tuple[str, str, str]] = [
    ("Go to dashboard", "services, throughput, env lines", "app.show('dashboard')"),
    ("Go to requests", "the live request table", "app.show('requests')"),
    ("Go to aliases", "edit model name -> backend rules", "app.show('aliases')"),
    ("Go to services", "logs, restart, stop/start", "app.show('services')"),
    ("Go to GPU", "llama-server and GPU status", "app.show('gpu')"),
    ("Help: keys", "every key on every screen", "app.help"),
    ("Restart LiteLLM", "restart the LiteLLM child process", "app.restart_service('litellm')"),
    ("Apply --swa-full", "sliding-window model: new sessions reuse the cache", "app.on_screen('gpu', 'swa_full')"),
    ("Add an alias", "aliases screen: new rule", "app.on_screen('aliases', 'add')"),
    ("Save aliases", "apply the alias table to the next request", "app.on_screen('aliases', 'save')"),
    ("Filter requests", "by model, status or session", "app.on_screen('requests', 'filter')"),
    ("Export requests", "what the requests filter shows, as CSV or JSON lines", "app.on_screen('requests', 'export')"),
    ("Copy env lines", "export ANTHROPIC_BASE_URL=... for Claude Code", "app.copy_env"),
    ("Quit", "stop the ccbridge serve the panel started (one it attached to keeps running)", "app.quit"),
]


class PanelCommands(Provider):
    """Lists PANEL_COMMANDS; runs the chosen one through the app's action system."""

    async def discover(self) -> Hits:
        for title, help_text, action in PANEL_COMMANDS:
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in PANEL_COMMANDS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.run_action, action), help=help_text)
