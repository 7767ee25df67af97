"""The digit CNN: small 3x3 conv stacks with batch norm and global average pooling.

Why this shape: MNIST digits need little capacity but reward translation
robustness. Pairs of 3x3 convolutions see 5x5 neighbourhoods cheaply, batch norm
lets a one-cycle schedule use a high learning rate, and global average pooling
replaces the large fully connected layer that would dominate the file size.
With the default channels the model has about 290k parameters (1.1 MB as
float32), a thousand times smaller than the original's pickled KNN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# The MNIST training set's pixel mean and standard deviation (pixels in [0, 1]);
# the model sees (x - MEAN) / STD. Measured with `digitlab data info` (33.33 / 255, 78.60 / 255).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


@dataclass(frozen=True)
class CNNConfig:
    """Constructor arguments of `DigitCNN`; stored in every checkpoint and model card."""

    channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128)
    pool_after: tuple[int, ...] = (1, 3)  # 2x2 max-pool after these conv indices: 28 -> 14 -> 7
    dropout: float = 0.1
    num_classes: int = 10
    # Fold each k x k pixel block into k*k channels before the first conv (lossless, like a
    # stride-k patch embedding): a CPU then never computes a full-resolution feature map,
    # which is where the default network spends most of its time. 1 = off.
    space_to_depth: int = 1

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> CNNConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # No conv bias: batch norm's shift makes it redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DigitCNN(nn.Module):
    """Input N x 1 x 28 x 28 (normalised pixels), output N x 10 logits."""

    name = "DigitCNN"

    def __init__(self, config: CNNConfig = CNNConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        if config.space_to_depth > 1:
            layers.append(nn.PixelUnshuffle(config.space_to_depth))
            c_in = config.space_to_depth**2
        for i, c_out in enumerate(config.channels):
            layers.append(conv_block(c_in, c_out))
            if i in config.pool_after:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(c_in, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class WithSoftmax(nn.Module):
    """What we export: raw [0, 1] pixels in, probabilities out.

    Folding the normalisation and softmax into the graph means every consumer of
    the ONNX file (the Predictor, evaluate, the web app) needs no torch-side
    constants; the card still records them for people reading it.
    """

    def __init__(self, model: DigitCNN, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.model = model
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model((x - self.mean) / self.std), dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class PairCNNConfig:
    """Constructor arguments of `PairCNN` (`digitlab.pairs`); stored in its model card."""

    channels: tuple[int, ...] = (16, 32, 32)  # a 2 x 2 max-pool after each: 28 -> 14 -> 7 -> 3
    hidden: int = 64
    dropout: float = 0.2
    num_classes: int = 101  # "00".."99" and "not a pair"

    def to_json(self) -> dict:
        return asdict(self)


class PairCNN(nn.Module):
    """Input N x 1 x 28 x 28 (a pair squeezed by `digitlab.pairs.pair_image`), output N x 101
    logits.

    Unlike `DigitCNN` it keeps where features are (flatten, not global pooling): "12" and
    "21" hold the same strokes, in another order. Small (about 40k parameters, 160 kB),
    because it ships beside the digit model in the 2 MB of models/."""

    name = "PairCNN"

    def __init__(self, config: PairCNNConfig = PairCNNConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in config.channels:
            layers += [conv_block(c_in, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = 28 >> len(config.channels)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class StringCNNConfig:
    """Constructor arguments of `StringCNN` (`digitlab.strings`); stored in its model card."""

    channels: tuple[int, ...] = (16, 32, 48, 64)  # pools: 2 x 2, 2 x 2, then 2 x 1 twice
    hidden: int = 64
    width: int = 5  # columns of the last feature map each frame's reading sees
    dropout: float = 0.2
    num_classes: int = 12  # blank, "0".."9" and "x", a part that is no digit

    def to_json(self) -> dict:
        return asdict(self)


class StringCNN(nn.Module):
    """Input N x 1 x 32 x 128 (a piece of ink fitted by `digitlab.strings.string_image`),
    output N x 32 x 12 logits: one reading per 4 columns, for CTC.

    Reads a run of touching digits without cutting it (segmentation-free): each frame
    says blank, a digit, or "x" (a part of a digit, or no digit). Fully convolutional so
    that it is small (about 90k parameters) and fast on a CPU; the 1-d convolution over
    frames lets a frame see a digit and a half of context, enough to tell where one
    digit ends and the next begins."""

    name = "StringCNN"

    def __init__(self, config: StringCNNConfig = StringCNNConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(config.channels):
            layers += [conv_block(c_in, c_out), nn.MaxPool2d(2 if i < 2 else (2, 1))]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        rows = 32 >> len(config.channels)
        self.head = nn.Sequential(
            nn.Conv1d(c_in * rows, config.hidden, config.width, padding=config.width // 2),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Conv1d(config.hidden, config.num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # N x C x rows x frames
        f = f.flatten(1, 2)  # N x (C rows) x frames
        return self.head(f).transpose(1, 2)  # N x frames x classes
