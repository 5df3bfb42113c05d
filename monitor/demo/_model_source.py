"""The demo model's code, written into the workspace as `digits_cnn.py` (a `python:` factory)."""

MODULE_NAME = "digits_cnn"
FACTORY = "build"

SOURCE = '''"""A small CNN for 32x32 digit images: the demo's deployed model (persistence-monitor demo).

The config refers to it as `architecture: python:digits_cnn:build`; its weights live in
models/digits-cnn.safetensors. `features` holds four stages, so `partial` strategies can train
the last ones; `fc` is the classifier that every fine-tune replaces.
"""

from torch import nn


def _stage(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2) if pool else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return nn.Sequential(*layers)


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 5, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _stage(3, width, pool=True),
            _stage(width, 2 * width, pool=True),
            _stage(2 * width, 4 * width, pool=True),
            _stage(4 * width, 4 * width, pool=False),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def build() -> nn.Module:
    return DigitsCNN()
'''
