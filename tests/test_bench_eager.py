"""Smoke test of benchmarks/bench_eager.py at a tiny size (no timing assertions)."""

import pytest
import scripts


@pytest.fixture(scope="module")
def bench():
    return scripts.load("benchmarks/bench_eager.py")


def test_measure_once_and_table(bench):
    rows = [{**bench.measure_once("ssim", mode, (1, 16, 16, 1)), "runs": 1} for mode in bench.MODES]
    assert all(r["first_s"] > 0 and r["second_s"] > 0 for r in rows)
    table = bench.format_markdown(rows, (1, 16, 16, 1))
    assert "| ssim |" in table and "eager / jit" in table
    with pytest.raises(ValueError, match="BxHxWxC"):
        bench.parse_size("16x16")
