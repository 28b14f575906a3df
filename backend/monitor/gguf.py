"""What a model's GGUF file says about its shape: layers, attention heads, the sliding window.

Reads only the metadata at the head of the file (never the tensors), by hand:
the `gguf` package would pull numpy into `ccbridge serve` to read ten numbers.
Long arrays (the 262,144-entry vocabulary of Gemma 3) are skipped with a seek.
Nothing here raises: an unreadable file gives None.

The sliding-window layer pattern follows llama.cpp (0.3.36's, build 0c1e570):
a `<arch>.attention.sliding_window_pattern` key in the file wins (a bool per
layer, or "every Nth layer is global"); without it llama.cpp uses a fixed
pattern per architecture, copied in `SWA_PATTERN_DEFAULTS`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 1 << 20
MAX_ARRAY = 4096
"""Arrays longer than this (vocabularies, merges) are skipped, not read."""

SWA_PATTERN_DEFAULTS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
    "cohere2": (4, False), "cohere2moe": (4, True), "afmoe": (4, False), "exaone4": (4, False),
    "exaone-moe": (4, False), "llama4": (4, False), "mellum": (4, False), "muse-glimmer": (4, False),
    "olmo2": (4, False), "gpt-oss": (2, False), "plamo3": (8, False), "smallthinker": (4, True),
    "laguna": (4, True),
}
"""llama.cpp's `load_swa_pattern(ml, n, dense_first)` per architecture: with n, every nth layer
(the last of each group of n, or the first when dense_first) attends to the whole context and the
others to the sliding window only."""


def _read_string(f: BinaryIO) -> str | None:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > _MAX_STRING:
        f.seek(n, 1)
        return None
    return f.read(n).decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, kind: int, max_array: int) -> Any:
    """One value; None (after skipping it) for an array longer than `max_array` or a huge string."""
    if kind in _SCALAR:
        fmt = _SCALAR[kind]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _read_string(f)
    if kind == _ARRAY:
        sub, count = struct.unpack("<IQ", f.read(12))
        if count > max_array:
            if sub in _SCALAR:
                f.seek(struct.calcsize(_SCALAR[sub]) * count, 1)
            else:
                for _ in range(count):
                    _read_value(f, sub, 0)
            return None
        return [_read_value(f, sub, max_array) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_metadata(path: str, *, max_array: int = MAX_ARRAY, max_kv: int = 4096) -> dict[str, Any] | None:
    """Every metadata key of a GGUF file (v2 or v3) and its value; long arrays are left out.

    None when the file is missing, not GGUF or cut short.
    """
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            (version,) = struct.unpack("<I", f.read(4))
            if version < 2:
                return None
            _tensors, n_kv = struct.unpack("<QQ", f.read(16))
            out: dict[str, Any] = {}
            for _ in range(min(n_kv, max_kv)):
                key = _read_string(f)
                (kind,) = struct.unpack("<I", f.read(4))
                value = _read_value(f, kind, max_array)
                if key is not None and value is not None:
                    out[key] = value
            return out
    except (OSError, ValueError, struct.error):
        return None


def gguf_block_count(path: str) -> int | None:
    """`<arch>.block_count` of a GGUF file; None on any problem."""
    shape = read_model_shape(path)
    return shape.n_layers if shape is not None else None


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The dimensions of a model that decide its KV cache, as its GGUF file gives them."""

    arch: str
    """`general.architecture` (e.g. "gemma3", "llama")."""
    n_layers: int | None
    """`<arch>.block_count`."""
    n_ctx_train: int | None
    """`<arch>.context_length`."""
    sliding_window: int
    """`<arch>.attention.sliding_window` in tokens; 0 when the model has none."""
    swa_layers: tuple[bool, ...]
    """Per layer: True for a sliding-window layer (empty without a window or a known pattern)."""
    pattern_source: str | None
    """Where `swa_layers` came from: "gguf" (sliding_window_pattern key) or "llama.cpp default for <arch>"."""
    n_head_kv: tuple[int, ...]
    """KV heads per layer (`<arch>.attention.head_count_kv`, a number or a list; defaults to head_count)."""
    key_length: int | None
    """Key length per head (`<arch>.attention.key_length`; defaults to embedding_length / head_count)."""
    value_length: int | None
    """Value length per head (`<arch>.attention.value_length`; defaults to key_length)."""
    key_length_swa: int | None = None
    """Key length of sliding-window layers when it differs (`key_length_swa`, e.g. Gemma 4)."""
    value_length_swa: int | None = None
    """Value length of sliding-window layers when it differs (`value_length_swa`)."""

    @property
    def uses_swa(self) -> bool:
        """True when some layers attend to the sliding window only."""
        return self.sliding_window > 0 and any(self.swa_layers)

    @property
    def n_swa_layers(self) -> int:
        """How many layers use the sliding window."""
        return sum(self.swa_layers)

    def kv_widths(self, layer: int) -> tuple[int, int] | None:
        """(K, V) elements per cached token of one layer: head length x KV heads; None when unknown."""
        swa = layer < len(self.swa_layers) and self.swa_layers[layer]
        k = (self.key_length_swa if swa and self.key_length_swa else self.key_length)
        v = (self.value_length_swa if swa and self.value_length_swa else self.value_length)
        if k is None or v is None or layer >= len(self.n_head_kv):
            return None
        heads = self.n_head_kv[layer]
        return k * heads, v * heads


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _swa_pattern(meta: dict[str, Any], arch: str, n_layers: int) -> tuple[tuple[bool, ...], str | None]:
    key = f"{arch}.attention.sliding_window_pattern"
    given = meta.get(key)
    if isinstance(given, list) and given and all(isinstance(x, bool | int) for x in given):
        flags = [bool(x) for x in given][:n_layers]
        return tuple(flags + [False] * (n_layers - len(flags))), "gguf"
    n_pattern, dense_first = SWA_PATTERN_DEFAULTS.get(arch, (None, False))
    source: str | None = f"llama.cpp default for {arch}"
    if _int(given) is not None:
        n_pattern, source = _int(given), "gguf"
    if n_pattern is None:
        return (), None
    if n_pattern == 0:
        return (True,) * n_layers, source
    if dense_first:
        return tuple(il % n_pattern != 0 for il in range(n_layers)), source
    return tuple(il % n_pattern < n_pattern - 1 for il in range(n_layers)), source


def shape_from_metadata(meta: dict[str, Any]) -> ModelShape | None:
    """A `ModelShape` from GGUF metadata (as `read_gguf_metadata` returns it); None without an architecture."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        return None

    def get(name: str) -> int | None:
        return _int(meta.get(f"{arch}.{name}"))

    n_layers = get("block_count")
    n_head = get("attention.head_count")
    kv = meta.get(f"{arch}.attention.head_count_kv")
    heads: tuple[int, ...] = ()
    if n_layers:
        if isinstance(kv, list) and kv:
            heads = tuple(int(x) for x in kv[:n_layers])
        elif isinstance(kv, int):
            heads = (kv,) * n_layers
        elif n_head:
            heads = (n_head,) * n_layers
    embd = get("embedding_length")
    key = get("attention.key_length") or (embd // n_head if embd and n_head else None)
    value = get("attention.value_length") or key
    window = get("attention.sliding_window") or 0
    swa_layers, source = _swa_pattern(meta, arch, n_layers or 0) if window > 0 else ((), None)
    return ModelShape(
        arch=arch, n_layers=n_layers, n_ctx_train=get("context_length"), sliding_window=window,
        swa_layers=swa_layers, pattern_source=source, n_head_kv=heads, key_length=key, value_length=value,
        key_length_swa=get("attention.key_length_swa"), value_length_swa=get("attention.value_length_swa"),
    )


def read_model_shape(path: str) -> ModelShape | None:
    """The shape of the model in a GGUF file; None when it cannot be read."""
    meta = read_gguf_metadata(path)
    return shape_from_metadata(meta) if meta is not None else None
