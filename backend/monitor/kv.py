"""llama-server's KV cache size, computed from the model's shape the way llama.cpp allocates it.

Follows llama.cpp 0.3.36 (build 0c1e570), `llama_kv_cache_iswa` and
`llama_context`: each slot (stream) gets `n_ctx / n_seq` cells rounded up to
256 (one stream of `n_ctx` cells with `--kv-unified`); full-attention layers
get all of them; sliding-window layers only `window x (slots when unified,
else 1) + ubatch`, rounded up to 256 and at most all of them, unless
`--swa-full` gives them all. A cell of one layer holds K and V of every KV
head, in the cache types of `-ctk`/`-ctv` (f16 unless given).
Checked against llama-server's own `llama_kv_cache: size = ...` log lines in
tests/e2e/test_swa.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.monitor.backend_status import ProcessFlags, SwaStatus
from backend.monitor.gguf import ModelShape

CELL_PAD = 256
"""llama.cpp pads a slot's cells (and the SWA cache) to a multiple of this."""
DEFAULT_UBATCH = 512
DEFAULT_AUTO_SLOTS = 4
"""Slots llama-server uses when -np is not given (this build: 4 slots, one unified KV cache)."""

GGML_TYPE_SIZES: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20),
    "iq4_nl": (32, 18), "q5_0": (32, 22), "q5_1": (32, 24),
}
"""The KV cache types llama-server accepts: (elements per block, bytes per block)."""


def _pad(n: int, to: int = CELL_PAD) -> int:
    return (n + to - 1) // to * to


def row_bytes(kind: str, n: int) -> int | None:
    """Bytes of `n` elements of a ggml type (ggml_row_size); None for a type not known here."""
    size = GGML_TYPE_SIZES.get(kind.lower())
    if size is None:
        return None
    per_block, nbytes = size
    return n // per_block * nbytes


@dataclass(frozen=True, slots=True)
class KvLayout:
    """How llama-server lays out its KV cache: what its flags (and /props) decide."""

    n_ctx: int
    """Total context (-c), all slots together."""
    n_seq: int
    """Slots (-np)."""
    unified: bool
    """One KV buffer shared by all slots (--kv-unified; this build's default when -np is not given)."""
    n_ubatch: int = DEFAULT_UBATCH
    """Physical batch (-ub)."""
    type_k: str = "f16"
    """K cache type (-ctk)."""
    type_v: str = "f16"
    """V cache type (-ctv)."""

    @property
    def cells(self) -> int:
        """Cells per stream: the whole context when unified, else one slot's share rounded up to 256."""
        return self.n_ctx if self.unified else _pad(max(1, self.n_ctx // self.n_seq))

    @property
    def streams(self) -> int:
        """KV streams: 1 when unified, else one per slot."""
        return 1 if self.unified else self.n_seq

    def swa_cells(self, window: int) -> int:
        """Cells per stream of a sliding-window layer without --swa-full."""
        return _pad(min(self.cells, window * (self.n_seq if self.unified else 1) + self.n_ubatch))


def layout_from(flags: ProcessFlags | None, n_ctx_slot: int | None, total_slots: int | None,
                n_ctx_train: int | None = None) -> KvLayout | None:
    """The layout from llama-server's flags, filled in from /props (context per slot, slots); None when
    the context is unknown."""
    flags = flags or ProcessFlags()
    unified = flags.kv_unified if flags.kv_unified is not None else flags.parallel is None
    n_seq = total_slots or flags.parallel or (DEFAULT_AUTO_SLOTS if flags.parallel is None else 1)
    n_ctx = flags.ctx if flags.ctx else None
    if n_ctx is None and n_ctx_slot:
        n_ctx = n_ctx_slot if unified else n_ctx_slot * n_seq
    n_ctx = n_ctx or n_ctx_train
    if not n_ctx:
        return None
    return KvLayout(n_ctx=n_ctx, n_seq=n_seq, unified=unified, n_ubatch=flags.ubatch or DEFAULT_UBATCH,
                    type_k=(flags.cache_type_k or "f16").lower(), type_v=(flags.cache_type_v or "f16").lower())


@dataclass(frozen=True, slots=True)
class KvEstimate:
    """KV cache bytes for one model and layout, split the way llama-server allocates (and logs) them."""

    base_bytes: int
    """Full-attention layers (llama-server's "non-SWA KV cache")."""
    swa_bytes: int
    """Sliding-window layers as llama-server keeps them without --swa-full (only the window)."""
    swa_full_bytes: int
    """Sliding-window layers with --swa-full (every cell, like a full-attention layer)."""
    cells: int
    """Cells per stream of a full-attention layer."""
    swa_cells: int
    """Cells per stream of a sliding-window layer without --swa-full."""
    streams: int
    """KV streams (slots, or 1 when unified)."""

    @property
    def extra_bytes(self) -> int:
        """What --swa-full adds."""
        return self.swa_full_bytes - self.swa_bytes

    def total(self, swa_full: bool) -> int:
        """The whole KV cache without or with --swa-full."""
        return self.base_bytes + (self.swa_full_bytes if swa_full else self.swa_bytes)


def kv_estimate(shape: ModelShape, layout: KvLayout) -> KvEstimate | None:
    """KV cache bytes of `shape` under `layout`; None when a dimension or a cache type is unknown."""
    if not shape.n_layers or len(shape.n_head_kv) < shape.n_layers:
        return None
    window_cells = layout.swa_cells(shape.sliding_window) if shape.uses_swa else layout.cells
    base = swa = swa_full = 0
    for layer in range(shape.n_layers):
        widths = shape.kv_widths(layer)
        if widths is None:
            return None
        k_row, v_row = row_bytes(layout.type_k, widths[0]), row_bytes(layout.type_v, widths[1])
        if k_row is None or v_row is None:
            return None
        per_cell = (k_row + v_row) * layout.streams
        if shape.uses_swa and shape.swa_layers[layer]:
            swa += per_cell * window_cells
            swa_full += per_cell * layout.cells
        else:
            base += per_cell * layout.cells
    return KvEstimate(base_bytes=base, swa_bytes=swa, swa_full_bytes=swa_full, cells=layout.cells,
                      swa_cells=window_cells, streams=layout.streams)


def swa_status(shape: ModelShape | None, flags: ProcessFlags | None, flags_source: str | None,
               n_ctx_slot: int | None = None, total_slots: int | None = None) -> SwaStatus | None:
    """The sliding-window state of a backend: None when its model has no sliding window.

    `flags` are llama-server's (None when they cannot be read, so --swa-full is unknown);
    `flags_source` says where they came from ("process" or "command").
    """
    if shape is None or not shape.uses_swa or not shape.n_layers:
        return None
    full = flags.swa_full if flags is not None else None
    layout = layout_from(flags, n_ctx_slot, total_slots, shape.n_ctx_train)
    est = kv_estimate(shape, layout) if layout is not None else None
    return SwaStatus(
        window=shape.sliding_window, swa_layers=shape.n_swa_layers, n_layers=shape.n_layers,
        pattern_source=shape.pattern_source, full=full, full_source=flags_source if flags is not None else None,
        n_ctx=layout.n_ctx if layout else None, slots=layout.n_seq if layout else None,
        cache_types=f"{layout.type_k}/{layout.type_v}" if layout else None,
        swa_cells=est.swa_cells if est else None,
        kv_bytes=est.total(bool(full)) if est else None,
        base_bytes=est.base_bytes if est else None, swa_bytes=est.swa_bytes if est else None,
        swa_full_bytes=est.swa_full_bytes if est else None, extra_bytes=est.extra_bytes if est else None,
    )
