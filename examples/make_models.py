"""Regenerate the example models shipped in examples/models/ (needs torch: the dev extra).

    python examples/make_models.py

``tiny_cnn``: a small image classifier (3x32x32 → 10 classes), seeded, exported both as
ONNX and as a ``torch.export`` archive. The files are checked in so the quickstart needs
no torch.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent / "models"


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(torch.flatten(self.features(x), 1)), dim=1)


def main() -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    example = (torch.randn(1, 3, 32, 32),)
    program = torch.export.export(model, example)
    HERE.mkdir(exist_ok=True)
    torch.export.save(program, str(HERE / "tiny_cnn.pt2"))
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(program, example, str(HERE / "tiny_cnn.onnx"), dynamo=True,
                          input_names=["image"], output_names=["probabilities"],
                          external_data=False)
    print("wrote", *sorted(p.name for p in HERE.iterdir()))


if __name__ == "__main__":
    main()
