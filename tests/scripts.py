"""Loads the repository's scripts (train.py, benchmarks/*.py) as modules for the tests."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(relative_path: str):
    """The script at `relative_path` (from the repository root), executed as a fresh module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
