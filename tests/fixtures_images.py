"""Image makers and a tiny test model for the preprocessing, Predictor and CLI tests.

Every picture here is drawn from a fixed recipe, so what the preprocessing
should make of it can be worked out by hand.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def canvas(width: int = 280, height: int = 280, paper: int = 255) -> Image.Image:
    return Image.new("L", (width, height), paper)


def ring(size: int = 280, pen: int = 20, ink: int = 0, paper: int = 255) -> Image.Image:
    """A "0": an ellipse 60 % of the canvas high, 40 % wide, centred; MNIST-like pen by default."""
    img = canvas(size, size, paper)
    box = (size * 0.3, size * 0.2, size * 0.7, size * 0.8)
    ImageDraw.Draw(img).ellipse(box, outline=ink, width=pen)
    return img


def png_bytes(img: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def digit_on_canvas(digit: np.ndarray, scale: int = 10, size: tuple[int, int] = (500, 400),
                    offset: tuple[int, int] = (150, 60)) -> np.ndarray:  # fmt: skip
    """An MNIST digit (white on black, 28 x 28) drawn big and black on a white canvas.

    Upscaled ``scale`` times with bicubic smoothing, pasted at ``offset`` (x, y).
    """
    big = Image.fromarray(255 - digit).resize((28 * scale,) * 2, Image.Resampling.BICUBIC)
    page = canvas(*size)
    page.paste(big, offset)
    return np.asarray(page)


def photo_like(digit: np.ndarray, seed: int = 0) -> bytes:
    """A phone-photo-like JPEG: a blue-ink digit on beige paper with uneven light and noise."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((240, 240), Image.Resampling.BICUBIC))
    ink = np.pad(ink.astype(np.float32) / 255, ((80, 80), (120, 120)))  # 400 x 480
    h, w = ink.shape
    light = 0.92 + 0.08 * np.linspace(-1, 1, w)[None, :] * np.linspace(1, 0.5, h)[:, None]
    paper = np.array([235, 225, 200], np.float32) * light[..., None]
    pen = np.array([30, 40, 140], np.float32)
    rgb = paper * (1 - ink[..., None]) + pen * ink[..., None]
    rgb += rng.normal(0, 5, rgb.shape)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    return png_bytes(img, "JPEG", quality=85)


def tiny_model(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A small linear softmax classifier as a digitlab model file, fitted by ridge regression.

    About 85 % on MNIST: good enough to check the plumbing, made in well under
    a second, and an honest ONNX graph (input N x 784, output probabilities).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from digitlab.card import Architecture, InputSpec, ModelCard
    from digitlab.modelfile import save_model

    x = images.reshape(len(images), -1).astype(np.float32) / 255
    x1 = np.hstack([x, np.ones((len(x), 1), np.float32)])
    targets = np.eye(10, dtype=np.float32)[labels]
    w = np.linalg.solve(x1.T @ x1 + 10 * np.eye(785), x1.T @ targets).astype(np.float32)
    w *= 8  # sharpen the softmax: ridge outputs are small
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["image", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(w[:784], "W"), numpy_helper.from_array(w[784], "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    card = ModelCard(
        name="tiny",
        kind="linear",
        architecture=Architecture(name="ridge-softmax"),
        input=InputSpec(layout="N784"),
        classes=list(range(10)),
    )
    return save_model(path, model.SerializeToString(), card)
