"""`edgeagent bench` on a decoder IR folder: generative cells in their own processes.

The tiny Llama IR is benched on ONNX Runtime fp32 and int4 with small shapes; the results must
carry per-shape generation figures, a KV size that follows from the model's layout, the
float32 cell's agreement with itself at 1.0, a shape past the model's positions skipped with
why, and a report that renders the generation table.
"""

from __future__ import annotations

import json

import pytest

from edgeagent.cli.main import main


@pytest.fixture(scope="module")
def decoder_results(llama_ir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-decoder") / "results.json"
    code = main(["bench", str(llama_ir.path), "--backends", "onnxruntime", "--precisions", "fp32,int4",
                 "--repeats", "1", "--prompt-tokens", "8,120", "--new-tokens", "4,16", "--generation-runs", "1",
                 "--agreement-prompts", "6", "--agreement-tokens", "6", "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text()), out, llama_ir


def test_decoder_cells_report_generation_figures(decoder_results):
    document, _, ir = decoder_results
    cells = {c["precision"]: c for c in document["benchmarks"]}
    assert set(cells) == {"fp32", "int4"}
    meta = ir.metadata
    for cell in cells.values():
        assert cell["status"] == "ok", cell.get("message")
        assert cell["model"]["task"] == "text-generation"
        shapes = {(s["prompt_tokens"], s["new_tokens"]): s for s in cell["generation"]["shapes"]}
        assert set(shapes) == {(8, 4), (8, 16), (120, 4), (120, 16)}
        # 120 + 16 tokens exceed the tiny model's 128 positions: skipped, with why.
        assert "max_length" in shapes[(120, 16)]["skipped"]
        for key in ((8, 4), (8, 16), (120, 4)):
            shape = shapes[key]
            assert shape["ttft_s"] > 0 and shape["tpot_s"] > 0 and shape["decode_tokens_per_s"] > 0
            assert shape["kv_cache_bytes"] == (meta["num_layers"] * 2 * meta["num_kv_heads"] * meta["head_dim"]
                                               * sum(key) * 4)
        assert cell["stats"]["rounds"] >= 3  # per-token latencies of the headline shape
        assert cell["memory"]["peak_rss_bytes"] > 0
        assert cell["primary_metric"] == "token_agreement"
        assert cell["agreement"]["prompts"] == 6
    assert cells["fp32"]["accuracy"]["token_agreement"] == 1.0
    assert cells["fp32"]["accuracy"]["sequence_identical"] == 1.0
    assert cells["int4"]["recipe"]["name"] == "weight-only"
    assert 0.0 <= cells["int4"]["accuracy"]["token_agreement"] <= 1.0


def test_report_shows_the_generation_table(decoder_results, capsys):
    _, out, _ = decoder_results
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| cell | prompt | new | ttft_ms | tpot_ms | decode_tok_s |" in text
    assert "skipped: 120+16 tokens exceed" in text


def test_report_plots_tokens_per_second_against_agreement(decoder_results, tmp_path):
    pytest.importorskip("matplotlib")
    _, out, _ = decoder_results
    assert main(["report", str(out), "--plot", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_int4_cells_of_an_encoder_are_skipped_with_why(tmp_path):
    from edgeagent.examples import tiny_classifier
    from edgeagent.ir import save_proto

    model = save_proto(tiny_classifier(), tmp_path / "classifier.onnx")
    out = tmp_path / "r.json"
    assert main(["bench", str(model.path), "--backends", "onnxruntime", "--precisions", "int4", "--repeats", "1",
                 "--min-calls", "5", "--min-time", "0", "--out", str(out)]) == 0
    cell = json.loads(out.read_text())["benchmarks"][0]
    assert cell["status"] == "skipped" and "decoders" in cell["message"]
