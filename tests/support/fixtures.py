"""pytest fixtures for the real llama-server.

Load them from the root conftest with ``pytest_plugins = ["tests.support.fixtures"]``
(the repository root must be on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .llama import LlamaServer
from .serve import ServeProcess, write_chain_config
from .tiny_model import write_tiny_model

DEFAULT_FLAGS = ("--slots", "--metrics")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight llama GGUF, written once per session."""
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def llama_server(tiny_model: Path) -> Iterator[LlamaServer]:
    """One llama-server for the session: tiny model, ``--slots --metrics``, 1 slot."""
    with LlamaServer(tiny_model, extra_args=DEFAULT_FLAGS) as server:
        yield server


@pytest.fixture
def start_llama_server(tiny_model: Path) -> Iterator[Callable[..., LlamaServer]]:
    """A factory: ``start_llama_server(**kwargs)`` starts a LlamaServer (the tiny
    model unless ``model_path`` is given); all are stopped after the test."""
    started: list[LlamaServer] = []

    def start(**kwargs: Any) -> LlamaServer:
        model_path = kwargs.pop("model_path", tiny_model)
        server = LlamaServer(model_path, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[tuple[ServeProcess, LlamaServer]]:
    """One llama-server (1 slot, 64k context) and one real `ccbridge serve` for the module."""
    tmp = tmp_path_factory.mktemp("chain")
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "config"), "CCBRIDGE_DATA_DIR": str(tmp / "data")}
    with LlamaServer(tiny_model, ctx=65536, extra_args=("--slots", "--metrics")) as llama:
        config = write_chain_config(tmp / "ccbridge.yaml", llama.api_base)
        serve = ServeProcess(config, env).start()
        try:
            yield serve, llama
        finally:
            serve.stop()
