"""The training fixtures of tests/train (tiny prepared dataset, compile cache, ``make_config``), reused."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_train_conftest", Path(__file__).parents[1] / "train" / "conftest.py")
_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_train)

data_dir = _train.data_dir
compilation_cache = _train.compilation_cache
make_config = _train.make_config
dataset_name = _train.dataset_name


@pytest.fixture(scope="session")
def base_config():
    """``base_config(data_dir, out, **fields)`` of tests/train (usable from module-scoped fixtures)."""
    return _train.base_config
