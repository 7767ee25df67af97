"""`digitlab.adapt` and `digitlab adapt`: a personal model from a few examples, on the real
MNIST files and the real bundled ONNX graphs, without PyTorch.

The writer in these tests draws every 1 with a long, nearly level flag, which the bundled
model reads as a 7: the drawing style the personal model has to learn.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab.adapt import (
    AdaptConfig,
    AdaptError,
    Example,
    Fit,
    PersonalModel,
    Prototypes,
    Whitening,
    examples_from_store,
    examples_sha256,
    personal_graph,
)
from digitlab.card import parse_card
from digitlab.graph import Embedder, GraphError, find_head
from digitlab.modelfile import OnnxModel, bundled_model_path, load_model, read_card
from digitlab.predict import Predictor
from digitlab.preprocess import normalized_png, preprocess


def flag1(digit: np.ndarray) -> np.ndarray:
    """An MNIST 1 (28 x 28, light on dark) with a long, nearly level flag from its top (22
    degrees below the horizontal), 4x upscaled."""
    ys, xs = np.nonzero(digit > 128)
    top, height = ys.min(), ys.max() - ys.min()
    x = xs[ys == top].mean()
    img = Image.fromarray(digit).resize((112, 112), Image.Resampling.BILINEAR)
    flag = [(4 * x, 4 * top), (4 * (x - 0.5 * height), 4 * (top + 0.2 * height))]
    ImageDraw.Draw(img).line(flag, fill=255, width=9)
    return np.asarray(img)


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory, mnist_dir) -> Path:
    """An $XDG_CACHE_HOME whose MNIST reference is computed once, for the API and the CLI."""
    home = tmp_path_factory.mktemp("xdg")
    PersonalModel(data_dir=mnist_dir, cache_dir=home / "digitlab" / "embeddings").prepare()
    return home


@pytest.fixture
def personal(cache_home, mnist_dir) -> PersonalModel:
    """A fresh personal model of the bundled model (the reference comes from the cache)."""
    return PersonalModel(data_dir=mnist_dir, cache_dir=cache_home / "digitlab" / "embeddings")


@pytest.fixture(scope="session")
def flagged_ones(mnist_test) -> np.ndarray:
    """MNIST's test 1s drawn with a flag, as the model sees them (N x 28 x 28 in [0, 1])."""
    images, labels = mnist_test
    return np.stack([preprocess(flag1(images[i])).image for i in np.flatnonzero(labels == 1)])


def _env(cache_home: Path, mnist_dir: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(cache_home), "DIGITLAB_DATA": str(mnist_dir),
            "COLUMNS": "200"}  # fmt: skip


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitlab", *args], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip


# --------------------------------------------------------------------------- #
# The embedding and the graph
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_the_embedding_is_found_in_either_graph_and_changes_nothing(kind, mnist_test, request):
    import onnx

    # The float graph: the bundled model's float twin (conftest's float_model).
    path = bundled_model_path() if kind == "int8" else request.getfixturevalue("float_model")
    model = OnnxModel(path)
    gemm, softmax = find_head(onnx.load_from_string(model.graph).graph)
    assert (gemm.op_type, softmax.op_type) == ("Gemm", "Softmax")
    x = mnist_test[0][:64].astype(np.float32) / 255
    probs, emb = Embedder(model).run(x)
    # The last stage's width: of the network, or of each member of an ensemble side by side.
    arch = model.card.architecture
    nets = [m["architecture"] for m in arch.kwargs["members"]] if arch.name == "Ensemble" else [
        arch.to_json()]  # fmt: skip
    assert emb.shape == (64, sum(net["kwargs"]["channels"][-1] for net in nets))
    np.testing.assert_array_equal(probs, model.predict_proba(x))  # the same graph, one more output


def test_a_graph_that_already_names_a_tensor_embedding_still_adapts(mnist_test):
    """The extra output takes a name the graph does not use, whatever the graph calls things."""
    import onnx

    base = OnnxModel(bundled_model_path())
    graph = onnx.load_from_string(base.graph)
    gemm, _ = find_head(graph.graph)
    old = gemm.input[0]
    for node in graph.graph.node:  # the embedding itself, renamed "embedding"
        node.input[:] = ["embedding" if n == old else n for n in node.input]
        node.output[:] = ["embedding" if n == old else n for n in node.output]
    renamed = OnnxModel.from_bytes(graph.SerializeToString(), base.card)
    x = mnist_test[0][:16].astype(np.float32) / 255
    np.testing.assert_array_equal(Embedder(renamed).run(x)[1], Embedder(base).run(x)[1])


def test_a_graph_without_a_linear_head_and_softmax_is_refused(tmp_path, mnist_dir):
    import onnx
    from onnx import TensorProto, helper

    from fixtures_images import tiny_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(GraphError, match="linear layer"):
        find_head(onnx.load_from_string(helper.make_model(graph).SerializeToString()).graph)
    # A model whose Softmax reads an Add (MatMul + Add): refused in adapting's words.
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (50, 28, 28), np.uint8), np.arange(50) % 10
    linear = tiny_model(tmp_path / "linear.onnx", images, labels)
    with pytest.raises(AdaptError, match=r"adapting needs .* fed by Add, not by a linear layer"):
        PersonalModel(linear, data_dir=mnist_dir, cache_dir=tmp_path)


def test_the_prototype_layer_graph_computes_what_numpy_computes(mnist_test, float_model):
    """On a float graph (its head differs from the int8 one's): a hand-made layer."""
    model = OnnxModel(float_model)
    images, labels = mnist_test
    x = images[:300].astype(np.float32) / 255
    probs, emb = Embedder(model).run(x)
    whitening = Whitening.fit(emb, shrink=0.1)
    cols = (labels[:5].astype(np.int64) + 1) % 10  # five prototypes, labelled wrongly on purpose
    protos = Prototypes.build(whitening(emb[:5]), np.full(5, 3.0), cols, 10, whitening, 60.0)
    head = Fit(protos, 1.3, 1.0, None, None, {})  # the graph needs the prototypes and T only
    graph = personal_graph(model, head)
    got = OnnxModel.from_bytes(graph, model.card).predict_proba(x)
    np.testing.assert_allclose(got, head.probabilities(emb, probs), atol=1e-5)
    assert (got[:5].argmax(1) == cols).all()  # each prototype wins at its own drawing


# --------------------------------------------------------------------------- #
# Learning a writer, and the guard rails
# --------------------------------------------------------------------------- #


def test_a_few_examples_of_a_writer_style_fix_new_instances(personal, flagged_ones):
    base = personal.predict_proba(flagged_ones).argmax(1)
    assert (base == 1).mean() < 0.3  # the style really is misread: mostly as 7
    rng = np.random.default_rng(0)
    order = rng.permutation(len(flagged_ones))
    learn, new = order[:10], order[10:]
    head = personal.add_many([Example(flagged_ones[i], 1) for i in learn])
    after = personal.predict_proba(flagged_ones[new]).argmax(1)
    assert (after == 1).mean() >= (base[new] == 1).mean() + 0.4
    assert head.figures["examples_accuracy_after"] == 1.0
    drop = head.figures["mnist_test_before"] - head.figures["mnist_test_after"]
    assert drop <= 0.0005 + 1e-9
    assert personal.n_examples == 10 and personal.counts == {1: 10}


def test_the_mnist_guard_narrows_the_prototypes_then_refuses(cache_home, mnist_dir, flagged_ones):
    cache = cache_home / "digitlab" / "embeddings"
    wide = AdaptConfig(reach=1.0)  # 2.5 times the default: prototypes that swallow MNIST digits
    examples = [Example(x, 1) for x in flagged_ones[:20]]
    head = PersonalModel(config=wide, data_dir=mnist_dir, cache_dir=cache).add_many(examples)
    assert head.strength < 1
    assert head.figures["mnist_test_before"] - head.figures["mnist_test_after"] <= 0.0005 + 1e-9
    stubborn = AdaptConfig(reach=1.0, max_narrowings=0)
    refusing = PersonalModel(config=stubborn, data_dir=mnist_dir, cache_dir=cache)
    with pytest.raises(AdaptError, match=r"held back: .* held-out MNIST"):
        refusing.add_many(examples)
    assert refusing.n_examples == 0 and refusing.card.adaptation is None  # left as it was


def test_one_mislabelled_correction_flips_no_clearly_drawn_digit(personal, mnist_test):
    images, labels = mnist_test
    x = images[:2000].astype(np.float32) / 255
    base = personal.predict_proba(x)
    clear = np.flatnonzero((base.max(1) > 0.999) & (base.argmax(1) == labels[:2000]))
    threes = [i for i in clear if labels[i] == 3][:3]
    for i in threes:  # a clear 3 "corrected" to 7
        personal.reset()
        personal.add(x[i], 7)
        after = personal.predict_proba(x).argmax(1)  # 2,000 MNIST test digits
        others = np.setdiff1d(clear, [i])
        assert (after[others] == labels[others]).all()
        assert after[i] == 7  # the drawing itself reads as the user said


def test_predictor_learns_live_and_resets(personal, flagged_ones):
    predictor, base = Predictor(personal), Predictor()
    personal.prepare()  # what an app does at start: the first correction then costs no more
    drawings = ((x * 255).astype(np.uint8) for x in flagged_ones)
    drawing, first = next((d, p) for d in drawings if (p := predictor.predict(d)).digit != 1)
    start = time.perf_counter()
    personal.add(first.normalized, 1)
    assert time.perf_counter() - start < 1.0  # the reference is loaded: a refit is fast
    assert predictor.predict(drawing).digit == 1
    assert predictor.rules.min_confidence == personal.card.calibration.min_confidence
    assert predictor.card.adaptation.n_examples == 1
    personal.reset()
    again, plain = predictor.predict(drawing), base.predict(drawing)
    assert again.probabilities == plain.probabilities and personal.n_examples == 0
    assert predictor.rules == base.rules


def test_the_personal_model_in_memory_is_the_live_one(personal, flagged_ones):
    examples = [Example(x, 1) for x in flagged_ones[:5]] + [Example(flagged_ones[5], 4)]
    personal.add_many(examples)
    graph, card = personal.to_onnx()
    assert card.onnx_sha256 == hashlib.sha256(graph).hexdigest()
    np.testing.assert_allclose(
        OnnxModel.from_bytes(graph, card).predict_proba(flagged_ones[:200]),
        personal.predict_proba(flagged_ones[:200]),
        atol=1e-4,  # float32 rounding, where a boost is partial; the export check's bound
    )
    a = card.adaptation
    assert a.base_onnx_sha256 == read_card(bundled_model_path()).onnx_sha256
    assert a.examples["1"] == 5 and a.examples["4"] == 1 and a.n_examples == 6
    assert a.examples_sha256 == examples_sha256(examples) == examples_sha256(examples[::-1])
    assert a.settings == asdict(AdaptConfig()) and a.method == "prototypes"
    assert card.calibration.validation["val_size"] == 5000  # the base card's split
    assert parse_card(json.loads(json.dumps(card.to_json()))) == card


def test_a_bad_example_is_refused_and_the_model_kept(personal):
    with pytest.raises(AdaptError, match="28 x 28"):
        personal.add(np.zeros((5, 5)), 3)
    with pytest.raises(AdaptError, match="no examples"):
        personal.add_many([])
    assert personal.n_examples == 0 and personal.card == load_model().card


# --------------------------------------------------------------------------- #
# Inputs: the corrections store, labelled folders
# --------------------------------------------------------------------------- #


def test_the_store_gives_its_newest_corrections_per_class(tmp_path, flagged_ones):
    from digitlab.corrections import CorrectionStore

    store = CorrectionStore(tmp_path / "c.sqlite3")
    for i in range(4):
        store.add(label=1, image_png=normalized_png(flagged_ones[i]), predicted=7,
                  confidence=0.9, model_sha256="0" * 64)  # fmt: skip
    got = examples_from_store(store.path, AdaptConfig(max_per_class=3))
    assert [e.label for e in got] == [1, 1, 1]
    assert [e.source.rsplit("#")[1] for e in got] == ["2", "3", "4"]  # the newest three
    np.testing.assert_allclose(got[-1].image, flagged_ones[3], atol=1 / 255)


@pytest.fixture(scope="module")
def writer_dir(tmp_path_factory, mnist_test) -> tuple[Path, Path]:
    """(DIR with DIR/1 holding 8 flagged 1s and DIR/0 two 0s, a folder of 30 new flagged 1s)."""
    images, labels = mnist_test
    root = tmp_path_factory.mktemp("writer")
    ones, zeros = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    learn, new = root / "learn", root / "new"
    for folder, items in ((learn / "1", ones[:8]), (learn / "0", zeros[:2]), (new, ones[8:38])):
        folder.mkdir(parents=True)
        for i in items:
            digit = flag1(images[i]) if labels[i] == 1 else images[i]
            Image.fromarray(255 - digit).save(folder / f"{i}.png")  # dark ink on white paper
    return learn, new


def test_cli_adapt_then_evaluate_and_predict(tmp_path, writer_dir, cache_home, mnist_dir):
    learn, new = writer_dir
    env = _env(cache_home, mnist_dir)
    out = tmp_path / "personal.onnx"
    code = (  # the CLI in this process, then: was PyTorch ever imported?
        "import sys\nfrom digitlab.cli import main\n"
        f"sys.argv = ['digitlab', 'adapt', {str(learn)!r}, '--out', {str(out)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "personal model written to" in done.stdout and "torch imported: False" in done.stdout
    card = read_card(out)
    assert card.adaptation.examples["1"] == 8 and card.adaptation.examples["0"] == 2
    evaluated = _cli("evaluate", "--model", str(out), "--json", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    accuracy = json.loads(evaluated.stdout)["accuracy"]  # MNIST test, which no fit measures
    base = json.loads(_cli("evaluate", "--json", env=env).stdout)["accuracy"]
    assert accuracy >= base - 0.001  # the guard's figures are the reference's guard digits:
    guard = card.adaptation.model_extra["guard"]
    assert guard["n"] == 3000 and guard["source"] == "shipped"
    assert card.adaptation.mnist_test_before - card.adaptation.mnist_test_after <= 0.0005 + 1e-9
    lines = {}
    for model in (str(out), str(bundled_model_path())):
        done = _cli("predict", "--model", model, "--json", str(new), env=env)
        assert done.returncode == 0, done.stderr
        lines[model] = [json.loads(line)["digit"] for line in done.stdout.splitlines()]
    personal_ones = np.mean([d == 1 for d in lines[str(out)]])
    base_ones = np.mean([d == 1 for d in lines[str(bundled_model_path())]])
    assert personal_ones >= base_ones + 0.3  # held-out drawings of the same style


def test_cli_adapt_from_a_store(tmp_path, flagged_ones, cache_home, mnist_dir):
    from digitlab.corrections import CorrectionStore

    store = CorrectionStore(tmp_path / "c.sqlite3")
    for x in flagged_ones[:3]:
        store.add(label=1, image_png=normalized_png(x), predicted=7, confidence=0.9,
                  model_sha256="0" * 64)  # fmt: skip
    out = tmp_path / "p.onnx"
    done = _cli("adapt", "--db", str(store.path), "--out", str(out),
                env=_env(cache_home, mnist_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_card(out).adaptation.examples["1"] == 3
    assert Predictor(out).predict((flagged_ones[0] * 255).astype(np.uint8)).digit == 1


def _bad_folder_with_text_file(root: Path) -> list[str]:
    (root / "d" / "3").mkdir(parents=True)
    (root / "d" / "3" / "notes.txt").write_text("not an image\n")
    return [str(root / "d")]


def _stray_folder(root: Path) -> list[str]:
    (root / "d" / "three").mkdir(parents=True)
    return [str(root / "d")]


def _empty_digit_folders(root: Path) -> list[str]:
    (root / "d" / "3").mkdir(parents=True)
    return [str(root / "d")]


def _empty_store(root: Path) -> list[str]:
    from digitlab.corrections import CorrectionStore

    return ["--db", str(CorrectionStore(root / "empty.sqlite3").path)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_bad_folder_with_text_file, "notes.txt"),
        (_stray_folder, "not a digit folder"),
        (_empty_digit_folders, "no images"),
        (_empty_store, "holds no corrections"),
        (lambda root: ["--db", str(root / "missing.sqlite3")], "no corrections store"),
        (lambda root: [str(root / "missing")], "not a folder"),
        (lambda root: [], "nothing to learn from"),
    ],
)
def test_cli_bad_inputs_are_one_line_and_exit_2(tmp_path, cache_home, mnist_dir, make, message):
    args = make(tmp_path)
    done = _cli("adapt", *args, "--out", str(tmp_path / "p.onnx"), env=_env(cache_home, mnist_dir))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert not (tmp_path / "p.onnx").exists() and not (tmp_path / "missing.sqlite3").exists()


def test_a_bad_adaptation_block_is_refused_naming_the_field():
    doc = read_card(bundled_model_path()).to_json()
    doc["adaptation"] = {"method": "prototypes", "n_examples": 0}
    with pytest.raises(ValueError, match="adaptation"):
        parse_card(doc)
    assert read_card(bundled_model_path()).adaptation is None  # older cards stay valid
