"""Benchmark models defined in code (no torchvision, no downloads), with fixed seeds.

Each builder returns ``(module.eval(), example_inputs)``. Weights use PyTorch's default
initialisation under ``torch.manual_seed(seed)``; every BatchNorm gets random affine
parameters and running statistics from the same seed, so folding BatchNorm into the
convolutions is not a no-op.

- ``resnet18``: the standard BasicBlock ResNet-18 (11.7M parameters), 1x3x224x224.
- ``mobilenetv2``: the standard MobileNetV2, width 1.0 (3.5M parameters), 1x3x224x224.
- ``mlp``: Linear 1024->1024 + ReLU, three times, input ``batch``x1024.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class BenchCase:
    """One row of the benchmark: a model at one batch size."""

    model: str
    batch: int
    build: Callable[[], Example]

    @property
    def key(self) -> str:
        return f"{self.model}-b{self.batch}"


def resnet18(seed: int = 0) -> Example:
    torch.manual_seed(seed)
    model = ResNet18()
    return _finish(model, seed, (1, 3, 224, 224))


def mobilenetv2(seed: int = 0) -> Example:
    torch.manual_seed(seed)
    model = MobileNetV2()
    return _finish(model, seed, (1, 3, 224, 224))


def mlp(batch: int = 1, seed: int = 0) -> Example:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(3):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    return _finish(nn.Sequential(*layers), seed, (batch, 1024))


def cases(names: list[str]) -> list[BenchCase]:
    """The benchmark rows for model names ``resnet18``, ``mobilenetv2``, ``mlp``."""
    table = {
        "resnet18": [BenchCase("resnet18", 1, resnet18)],
        "mobilenetv2": [BenchCase("mobilenetv2", 1, mobilenetv2)],
        "mlp": [BenchCase("mlp", 1, lambda: mlp(1)), BenchCase("mlp", 64, lambda: mlp(64))],
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(table)}")
    return [case for name in names for case in table[name]]


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _finish(model: nn.Module, seed: int, shape: tuple[int, ...]) -> Example:
    gen = torch.Generator().manual_seed(seed)
    _randomize_batchnorm(model, gen)
    x = torch.randn(*shape, generator=gen)
    return model.eval(), (x,)


def _randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.05)


# --- ResNet-18 (He et al. 2015, BasicBlock, layers [2, 2, 2, 2]) -------------------------


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True),
                                  *_conv_bn(cout, cout, 3))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


# --- MobileNetV2 (Sandler et al. 2018, width 1.0) ----------------------------------------

# expansion t, output channels c, repeats n, first stride s
_MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1,
                   groups: int = 1) -> list[nn.Module]:
    return [*_conv_bn(cin, cout, k, stride, groups), nn.ReLU6(inplace=True)]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn_relu6(cin, hidden, 1)
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, cout, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = _conv_bn_relu6(3, 32, 3, 2)
        cin = 32
        for expand, cout, repeats, stride in _MBV2_SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += _conv_bn_relu6(cin, 1280, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# -- shared by the benchmark scripts ------------------------------------------------------

INPUT_NAME = "x"


def export_onnx(module: Any, inputs: tuple[Any, ...], path: Path) -> Path:
    """torch.export the module, then torch.onnx.export the program (dynamo exporter)."""
    program = torch.export.export(module, inputs)
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(program, inputs, str(path), dynamo=True, input_names=[INPUT_NAME],
                          external_data=False)
    return path


@contextlib.contextmanager
def workdir(work: Path | None, prefix: str) -> Iterator[Path]:
    """``work`` (created, kept) or a temporary folder removed afterwards."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work.resolve()
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"

