"""Smoke test of the benchmark script's functions at a tiny size (no timing assertions)."""

import json

import pytest
import scripts


@pytest.fixture(scope="module")
def bench():
    return scripts.load("benchmarks/bench_ssim.py")


def test_parse_size(bench):
    assert bench.parse_size("2x32x32x3") == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="BxHxWxC"):
        bench.parse_size("32x32")


def test_run_benchmark_tiny(bench):
    rows = bench.run_benchmark(
        [(2, 32, 32, 3)], repeats=1, warmup=0, with_torch=False, log=lambda _: None
    )
    by_key = {(r["impl"], r["pass"]): r for r in rows}
    for impl in ("ssim", "dssim_mae_loss", "dm_pix.ssim"):
        for pass_name in ("fwd", "fwd+bwd"):
            row = by_key[impl, pass_name]
            assert row["median_ms"] > 0 and row["size"] == "2x32x32x3"
            assert row["temp_bytes"] is None or row["temp_bytes"] >= 0
    assert ("ms_ssim", "fwd") not in by_key  # 32 px is below MS-SSIM's minimum
    assert by_key["dm_pix.ssim", "fwd"]["speedup_vs_dm_pix"] == pytest.approx(1.0)
    table = bench.format_markdown(rows, bench.machine_description())
    assert "| 2x32x32x3 | fwd+bwd | ssim |" in table


def test_ms_ssim_case_and_cli(bench, tmp_path):
    assert "ms_ssim" in bench.jax_cases((1, 161, 161, 1), with_dm_pix=False)
    out = tmp_path / "res"
    argv = [
        "--sizes",
        "1x24x24x1",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--no-torch",
        "--method",
        "slices",
        "--output",
        str(out),
    ]
    assert bench.main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["machine"]["filter_method"] == "slices"
    assert {r["impl"] for r in record["rows"]} == {"ssim", "dssim_mae_loss", "dm_pix.ssim"}
    assert out.with_suffix(".md").read_text().startswith("Machine:")
