"""The benchmark models (benchmarks/models.py) build, have the standard sizes and are seeded.

No timings: the benchmark itself is a script (benchmarks/compile_bench.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")

MODELS_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "models.py"


@pytest.fixture(scope="module")
def models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("neofleet_bench_models", MODELS_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "kwargs", "in_shape", "out_shape", "params"), [
    ("resnet18", {}, (1, 3, 224, 224), (1, 1000), (11.6e6, 11.8e6)),
    ("mobilenetv2", {}, (1, 3, 224, 224), (1, 1000), (3.4e6, 3.6e6)),
    ("mlp", {"batch": 1}, (1, 1024), (1, 1024), (3.14e6, 3.15e6)),
    ("mlp", {"batch": 64}, (64, 1024), (64, 1024), (3.14e6, 3.15e6)),
])
def test_model_builds_with_expected_shape_and_size(models, name, kwargs, in_shape, out_shape,
                                                   params):
    module, inputs = getattr(models, name)(**kwargs)
    assert not module.training
    assert tuple(inputs[0].shape) == in_shape
    with torch.inference_mode():
        out = module(*inputs)
    assert tuple(out.shape) == out_shape
    assert torch.isfinite(out).all()
    low, high = params
    assert low <= models.param_count(module) <= high


def test_models_are_seeded(models):
    (a, (xa,)), (b, (xb,)) = models.mobilenetv2(seed=3), models.mobilenetv2(seed=3)
    assert torch.equal(xa, xb)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    c, _ = models.mobilenetv2(seed=4)
    assert not torch.equal(next(iter(a.parameters())), next(iter(c.parameters())))


def test_batchnorm_stats_are_not_identity(models):
    module, _ = models.resnet18()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 20
    for bn in norms:
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))


def test_cases_expand_mlp_to_two_batches(models):
    rows = models.cases(["resnet18", "mlp"])
    assert [(c.model, c.batch) for c in rows] == [("resnet18", 1), ("mlp", 1), ("mlp", 64)]
    with pytest.raises(ValueError, match="unknown model"):
        models.cases(["vgg"])
