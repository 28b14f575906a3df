"""Screenshots of every panel screen from the real app driving real traffic through the real chain.

    .venv/bin/python scripts/screenshots.py      # writes screenshots/*.svg

Starts the tiny llama-server (tests/support: built by scripts/test.sh), runs the
panel as `ccbridge` does (it starts `ccbridge serve` with a real LiteLLM in the
background and talks to it over its API), sends `claude -p` through it (Claude
Code 2.1.197 and 2.1.330 when installed, plus a few direct requests, one of
them for a model no alias matches, one still under way for the dashboard),
then saves an 100x30 SVG per screen. Regenerate them whenever the UI changes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "screenshots"
SIZE = (100, 30)


def main() -> None:
    import threading

    import httpx

    from tests.support.claude import run_claude
    from tests.support.config import chain_config
    from tests.support.llama import LlamaServer
    from tests.support.tiny_model import write_tiny_model
    from tui.app import PanelApp
    from tui.launcher import link_for_config

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ccbridge-shots-") as d:
        tmp = Path(d)
        os.environ["CCBRIDGE_CONFIG_DIR"] = str(tmp / "config")
        os.environ["CCBRIDGE_DATA_DIR"] = str(tmp / "data")
        model = write_tiny_model(tmp / "tiny-llama.gguf")
        with LlamaServer(model, ctx=65536, extra_args=("--slots", "--metrics")) as llama:
            config = chain_config(tmp / "ccbridge.yaml", {"local": {"api_base": llama.api_base, "model": "auto"}},
                                  aliases={"claude-haiku-*": "local", "*": "local"})
            app = PanelApp(None, link=link_for_config(config))

            async def drive() -> None:
                async with app.run_test(size=SIZE) as pilot:
                    async def until(check, timeout: float) -> None:  # type: ignore[no-untyped-def]
                        deadline = time.monotonic() + timeout
                        while not check() and time.monotonic() < deadline:
                            await pilot.pause(0.2)

                    await until(lambda: (app.state.service("litellm") or {}).get("state") == "ready", 180)
                    url = app.state.status["proxy_url"]
                    for version in ("2.1.197", "2.1.330"):
                        try:
                            result = await asyncio.to_thread(run_claude, version, url, "Hello world", timeout=240)
                            print(f"claude {version}: exit {result.returncode}")
                        except RuntimeError as exc:  # that release is not installed here
                            print(f"claude {version}: skipped ({exc})")

                    def direct(model: str) -> int:
                        return httpx.post(f"{url}/v1/messages", json={
                            "model": model, "max_tokens": 64, "stream": True,
                            "messages": [{"role": "user", "content": "Say hello"}]},
                            headers={"x-api-key": "ccbridge-local", "anthropic-version": "2023-06-01"},
                            timeout=120, trust_env=False).status_code

                    for model in ("claude-haiku-4-5", "claude-sonnet-4-6", "gpt-4o"):
                        print(f"direct {model}: {await asyncio.to_thread(direct, model)}")

                    def long_prompt() -> None:  # still under way when the dashboard is saved
                        httpx.post(f"{url}/v1/messages", json={
                            "model": "claude-opus-4-8", "max_tokens": 64, "stream": True, "messages": [
                                {"role": "user", "content": " ".join(f"word{i % 977}" for i in range(1500))}]},
                            headers={"x-api-key": "ccbridge-local", "anthropic-version": "2023-06-01"},
                            timeout=300, trust_env=False)

                    slow = threading.Thread(target=long_prompt, daemon=True)
                    slow.start()
                    await until(lambda: bool(app.state.in_flight), 30)
                    await pilot.pause(2.5)  # a status poll and a flush

                    async def shot(name: str, *keys: str) -> None:
                        if keys:
                            await pilot.press(*keys)
                        await pilot.pause(0.6)
                        app.save_screenshot(str(OUT / f"{name}.svg"))
                        print(f"wrote screenshots/{name}.svg")

                    await shot("dashboard", "1")
                    await asyncio.to_thread(slow.join, 300)
                    await pilot.pause(1.0)
                    await shot("requests", "2")
                    await shot("request-detail", "enter")
                    await shot("aliases", "escape", "3")
                    await shot("alias-editor", "a", *"claude-opus-4-8[1m]", "tab", "end", *"x")
                    await shot("services", "escape", "u", "4")
                    await shot("gpu", "5")
                    await shot("help", "question_mark")
                    await pilot.press("escape", "q")
                    await until(lambda: not app.is_running, 60)

            asyncio.run(drive())


if __name__ == "__main__":
    main()
