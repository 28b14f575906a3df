"""The model's shape from its GGUF header, and the KV cache llama-server allocates for it.

GGUF files are written with the real `gguf` package (the one llama.cpp's
converters use); the KV figures are checked against the sizes llama-server
0.3.36 (build 0c1e570) logged for the real Gemma 3 270M model.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from backend.monitor.gguf import gguf_block_count, read_gguf_metadata, read_model_shape
from backend.monitor.kv import KvLayout, kv_estimate, layout_from, row_bytes, swa_status
from backend.monitor.process import parse_flags

FIXTURES = Path(__file__).parent / "fixtures" / "monitor"
MiB = 2**20


def write_gguf(path: Path, arch: str, keys: dict[str, object], vocab: int = 300) -> Path:
    """A header-only GGUF like a converter writes (no tensors: only the metadata is read)."""
    writer = gguf.GGUFWriter(str(path), arch)
    for name, value in keys.items():
        key = f"{arch}.{name}"
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_string(key, str(value))
    writer.add_token_list([f"t{i}" for i in range(vocab)])  # a long array, to be skipped
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


GEMMA3_270M = {"context_length": 32768, "embedding_length": 640, "block_count": 18, "feed_forward_length": 2048,
               "attention.head_count": 4, "attention.key_length": 256, "attention.value_length": 256,
               "attention.sliding_window": 512, "attention.head_count_kv": 1}
"""The dimensions in the real gemma-3-270m-q4_k_m.gguf (gguf-dump)."""


@pytest.fixture
def gemma3(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "gemma3.gguf", "gemma3", GEMMA3_270M, vocab=10_000)


def test_block_count_of_the_tiny_model_and_bad_files(tiny_model, tmp_path):
    assert gguf_block_count(str(tiny_model)) == 2
    assert gguf_block_count(str(FIXTURES / "models.json")) is None
    assert gguf_block_count("/no/such/file.gguf") is None
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(tiny_model).read_bytes()[:200])
    assert read_gguf_metadata(str(cut)) is None


def test_the_tiny_llama_has_no_sliding_window(tiny_model):
    shape = read_model_shape(str(tiny_model))
    assert shape is not None and shape.arch == "llama" and shape.n_layers == 2
    assert shape.sliding_window == 0 and not shape.uses_swa and shape.swa_layers == ()
    assert shape.n_head_kv == (4, 4) and shape.key_length == 16 and shape.value_length == 16  # 64 / 4 heads


def test_gemma3_gets_llama_cpps_pattern_every_sixth_layer_global(gemma3):
    meta = read_gguf_metadata(str(gemma3))
    assert meta is not None and "tokenizer.ggml.tokens" not in meta  # 10,000 entries: skipped
    assert meta["tokenizer.chat_template"] == "{{ messages }}"
    shape = read_model_shape(str(gemma3))
    assert shape is not None and shape.uses_swa and shape.sliding_window == 512
    assert shape.pattern_source == "llama.cpp default for gemma3"
    assert [i for i, swa in enumerate(shape.swa_layers) if not swa] == [5, 11, 17]
    assert shape.n_swa_layers == 15 and shape.n_head_kv == (1,) * 18
    assert shape.kv_widths(0) == (256, 256)


def test_a_pattern_in_the_file_wins(tmp_path):
    flags = [True, True, False, True, True, False]
    path = write_gguf(tmp_path / "g.gguf", "gemma3", {**GEMMA3_270M, "block_count": 6,
                                                      "attention.sliding_window_pattern": flags})
    shape = read_model_shape(str(path))
    assert shape is not None and shape.swa_layers == tuple(flags) and shape.pattern_source == "gguf"
    every_third = write_gguf(tmp_path / "h.gguf", "gemma3", {**GEMMA3_270M, "block_count": 6,
                                                             "attention.sliding_window_pattern": 3})
    shape = read_model_shape(str(every_third))
    assert shape is not None and shape.swa_layers == (True, True, False, True, True, False)


def test_per_layer_kv_heads_and_swa_key_lengths(tmp_path):
    path = write_gguf(tmp_path / "x.gguf", "granite-swa", {
        "block_count": 4, "embedding_length": 512, "attention.head_count": 8, "attention.head_count_kv": [2, 2, 4, 2],
        "attention.key_length": 128, "attention.key_length_swa": 64, "attention.value_length_swa": 64,
        "attention.sliding_window": 1024, "attention.sliding_window_pattern": [True, True, False, True]})
    shape = read_model_shape(str(path))
    assert shape is not None and shape.n_head_kv == (2, 2, 4, 2)
    assert shape.kv_widths(0) == (128, 128) and shape.kv_widths(2) == (512, 512)  # swa: 64 x 2; global: 128 x 4


def test_an_architecture_without_a_known_pattern_is_not_guessed(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", "mistral", {"block_count": 4, "embedding_length": 256,
                                                        "attention.head_count": 4, "attention.sliding_window": 4096})
    shape = read_model_shape(str(path))
    assert shape is not None and shape.sliding_window == 4096 and shape.swa_layers == () and not shape.uses_swa


def test_kv_sizes_match_llama_servers_log_for_gemma3_270m(gemma3):
    # llama-server 0.3.36 logged for -c 8192 -np 1: "size = 24.00 MiB (8192 cells, 3 layers, 1/1 seqs)" for the
    # non-SWA cache and "size = 15.00 MiB (1024 cells, 15 layers, 1/1 seqs)" for the SWA cache; with --swa-full
    # the SWA cache is 8192 cells.
    shape = read_model_shape(str(gemma3))
    assert shape is not None
    est = kv_estimate(shape, KvLayout(n_ctx=8192, n_seq=1, unified=False))
    assert est is not None
    assert (est.base_bytes, est.swa_bytes, est.swa_full_bytes) == (24 * MiB, 15 * MiB, 120 * MiB)
    assert (est.cells, est.swa_cells, est.streams) == (8192, 1024, 1)
    assert est.extra_bytes == 105 * MiB and est.total(False) == 39 * MiB and est.total(True) == 144 * MiB


def test_kv_layouts_from_flags(gemma3):
    shape = read_model_shape(str(gemma3))
    assert shape is not None
    # -np 4 without --kv-unified: four streams of 8192 cells; the window is per stream
    split = layout_from(parse_flags(["llama-server", "-c", "32768", "-np", "4"]), 8192, 4)
    assert split == KvLayout(n_ctx=32768, n_seq=4, unified=False)
    est = kv_estimate(shape, split)
    assert est is not None and (est.cells, est.streams, est.swa_cells) == (8192, 4, 1024)
    # no -np: this build runs 4 slots on one unified cache, whose window covers every slot
    auto = layout_from(parse_flags(["llama-server", "-c", "32768"]), 32768, 4)
    assert auto is not None and auto.unified and auto.n_seq == 4
    est = kv_estimate(shape, auto)
    assert est is not None and (est.cells, est.streams, est.swa_cells) == (32768, 1, 2560)  # 512 x 4 + 512
    # a q8_0 cache is 34 bytes per 32 values; an unknown type gives no figure
    q8 = layout_from(parse_flags(["llama-server", "-c", "8192", "-np", "1", "-ctk", "q8_0", "-ctv", "q8_0"]), None, 1)
    est = kv_estimate(shape, q8) if q8 else None
    assert est is not None and est.base_bytes == 3 * 8192 * 2 * (256 // 32 * 34)
    odd = layout_from(parse_flags(["llama-server", "-c", "8192", "-ctk", "q3_k"]), None, 1)
    assert odd is not None and kv_estimate(shape, odd) is None
    assert row_bytes("F16", 256) == 512 and row_bytes("nope", 1) is None
    # without -c: /props' context per slot, else the model's trained context
    assert layout_from(parse_flags(["llama-server", "-np", "2"]), 4096, 2) == KvLayout(8192, 2, False)
    assert layout_from(None, None, None, 32768) == KvLayout(32768, 4, True)
    assert layout_from(None, None, None) is None


def test_swa_status_from_flags(gemma3, tiny_model):
    shape = read_model_shape(str(gemma3))
    off = swa_status(shape, parse_flags(["llama-server", "-c", "8192", "-np", "1"]), "process", 8192, 1)
    assert off is not None and off.full is False and off.full_source == "process"
    assert (off.window, off.swa_layers, off.n_layers, off.swa_cells) == (512, 15, 18, 1024)
    assert off.kv_bytes == 39 * MiB and off.extra_bytes == 105 * MiB and off.cache_types == "f16/f16"
    on = swa_status(shape, parse_flags(["llama-server", "-c", "8192", "-np", "1", "--swa-full"]), "command")
    assert on is not None and on.full is True and on.kv_bytes == 144 * MiB and on.full_source == "command"
    unknown = swa_status(shape, None, None, 8192, 1)
    assert unknown is not None and unknown.full is None and unknown.full_source is None
    assert swa_status(read_model_shape(str(tiny_model)), None, None, 8192, 1) is None
    assert swa_status(None, None, None) is None
