"""Smoke test of benchmarks/bench_eager.py at a tiny size (no timing assertions)."""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_eager.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_eager", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_once_and_table(bench):
    rows = [{**bench.measure_once("ssim", mode, (1, 16, 16, 1)), "runs": 1} for mode in bench.MODES]
    assert all(r["first_s"] > 0 and r["second_s"] > 0 for r in rows)
    table = bench.format_markdown(rows, (1, 16, 16, 1))
    assert "| ssim |" in table and "eager / jit" in table
    with pytest.raises(ValueError, match="BxHxWxC"):
        bench.parse_size("16x16")
