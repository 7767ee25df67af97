"""`digitlab cascade`: an ensemble that runs its cheapest member first and the others only on
the images that member's guess is unsure of; one graph that still ends like a network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import onnx

from digitlab import cascade as ca
from digitlab.ensemble import ensemble_model
from digitlab.evaluate import evaluate
from digitlab.graph import Embedder, find_head, input_dependent, needed
from digitlab.modelfile import OnnxModel, read_card
from digitlab.predict import Predictor


@pytest.fixture(scope="module")
def ensemble(tiny_members, tmp_path_factory, mnist_dir) -> Path:
    path, _ = ensemble_model(tiny_members, tmp_path_factory.mktemp("ens") / "e.onnx", mnist_dir)
    return path


@pytest.fixture(scope="module")
def parts(ensemble, mnist_test):
    """What `cascade_model` builds from: the members, the fitted guess, the widths."""
    model = OnnxModel(ensemble)
    proto = onnx.load_from_string(model.graph)
    members = ca.Members.of(proto, ca.find_concat(proto.graph))
    embeddings = ca.tensors_of(model, members.embeddings, mnist_test[0][:2000])
    first = members.cheapest()
    rest = np.concatenate([e for i, e in enumerate(embeddings) if i != first], axis=1)
    guess = ca.fit_guess(embeddings[first], rest, ridge=1.0)
    return model, first, guess, [e.shape[1] for e in embeddings]


def _probs(parts, threshold: float, x: np.ndarray) -> np.ndarray:
    model, first, guess, widths = parts
    card = model.card.evolve(not_digit=None)
    return OnnxModel.from_bytes(ca.cascade_graph(model, first, guess, widths, threshold), card
                                ).predict_proba(x)  # fmt: skip


def test_the_cheapest_member_goes_first(parts):
    model, first, _, _ = parts
    proto = onnx.load_from_string(model.graph)
    macs = ca.Members.of(proto, ca.find_concat(proto.graph)).macs
    # The second tiny member reads 14 x 14 x 4 (space to depth): 4x fewer positions.
    assert first == 1 and macs[1] < macs[0] / 2


def test_multiply_adds_match_a_count_in_pytorch(tiny_members):
    import torch

    from digitlab.models.cnn import DigitCNN
    from digitlab.train import CNNConfig

    arch = read_card(tiny_members[1]).architecture.kwargs
    net = DigitCNN(CNNConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in arch.items()})).eval()  # fmt: skip
    counted = []

    def hook(layer, _inputs, out):
        if isinstance(layer, torch.nn.Conv2d):
            counted.append(
                out.numel() * layer.in_channels // layer.groups * layer.weight[0, 0].numel()
            )
        else:
            counted.append(layer.in_features * layer.out_features)

    for layer in net.modules():
        if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
            layer.register_forward_hook(hook)
    net(torch.zeros(1, 1, 28, 28))
    proto = onnx.load_from_string(OnnxModel(tiny_members[1]).graph)
    assert ca.multiply_adds(proto, set(range(len(proto.graph.node)))) == sum(counted)


def test_each_image_gets_the_guess_or_the_full_ensemble(parts, mnist_test):
    x = mnist_test[0][:600].astype(np.float32) / 255
    always, never = _probs(parts, ca.ALWAYS, x), _probs(parts, ca.NEVER, x)
    ensemble = parts[0].predict_proba(x)
    np.testing.assert_allclose(always, ensemble, atol=1e-5)  # every image through every member
    assert np.abs(never - ensemble).max() > 1e-3  # the guess alone is not the ensemble
    threshold = float(np.median(never.max(1)))
    sent = never.max(1) < threshold
    assert 100 < sent.sum() < 500
    mixed = _probs(parts, threshold, x)
    np.testing.assert_allclose(mixed[sent], always[sent], atol=1e-6)
    np.testing.assert_allclose(mixed[~sent], never[~sent], atol=1e-6)
    # One image alone, sent on or not, reads as it does in a batch.
    for i in (int(np.argmax(sent)), int(np.argmin(sent))):
        np.testing.assert_allclose(_probs(parts, threshold, x[i : i + 1])[0], mixed[i], atol=1e-6)


def test_the_router_also_sends_on_what_the_detector_scores_high_on_the_guess(parts, mnist_test):
    from digitlab.card import NotDigit
    from digitlab.notdigit import OUTPUT, Head, strip, with_detector

    model, first, guess, widths = parts
    rng = np.random.default_rng(0)
    head = Head(rng.normal(size=(40, 8)).astype(np.float32), np.zeros(8, np.float32),
                rng.normal(size=(8, 1)).astype(np.float32), np.zeros(1, np.float32))  # fmt: skip
    block = NotDigit(method="test", output=OUTPUT, threshold=0.9, threshold_rule="test",
                     embedding="ensemble_embedding", negatives={}, positives={}, training={},
                     val={}, test={})  # fmt: skip
    card = model.card.evolve(not_digit=block)
    detected = OnnxModel.from_bytes(with_detector(model.graph, "ensemble_embedding", head), card)
    x = mnist_test[0][:400]
    plain = card.evolve(not_digit=None)

    def run(threshold: float, router: float | None) -> OnnxModel:
        g = ca.cascade_graph(detected, first, guess, widths, threshold, router)
        return OnnxModel.from_bytes(g, plain)

    never, always = run(ca.NEVER, ca.ALWAYS), run(ca.ALWAYS, None)
    guessed = ca.tensors_of(never, [ca.FIRST + "ensemble_embedding"], x)[0]
    scores = head.scores(guessed)
    router = float(np.median(scores))
    conf = never.predict_proba(x / 255).max(1)
    threshold = float(np.quantile(conf, 0.2))
    sent = (conf < threshold) | (scores > router)
    mixed = run(threshold, router).predict_proba(x / 255)
    np.testing.assert_allclose(mixed[sent], always.predict_proba(x / 255)[sent], atol=1e-6)
    np.testing.assert_allclose(mixed[~sent], never.predict_proba(x / 255)[~sent], atol=1e-6)
    assert (~sent).sum() > 0 and (scores > router).sum() > (conf < threshold).sum() / 2
    with pytest.raises(ca.CascadeError, match="a router needs"):
        ca.cascade_graph(model, first, guess, widths, threshold, router)
    # A detector fitted on the cascade goes in beside the router (scripts/fit_not_a_digit.py
    # strips the old one first), and the probabilities stay what they were.
    routed = ca.cascade_graph(detected, first, guess, widths, threshold, router)
    refit = with_detector(strip(routed), "ensemble_embedding", head)
    both = OnnxModel.from_bytes(refit, card)
    probs, scores = both.predict_scores(x / 255)
    np.testing.assert_array_equal(probs, mixed)
    assert scores.shape == (400,) and any(n.name.startswith(ca.FIRST) for n in
                                          onnx.load_from_string(refit).graph.node)  # fmt: skip


def test_the_other_members_read_only_the_rows_sent_on(parts):
    model, first, guess, widths = parts
    g = onnx.load_from_string(ca.cascade_graph(model, first, guess, widths, 0.9)).graph
    scatters = [n for n in g.node if n.op_type == "ScatterND"]
    guess_gemm = next(n for n in g.node if n.name.startswith(ca.PREFIX) and n.op_type == "Gemm")
    decision = needed(g, f"{ca.PREFIX}unsure") | needed(g, guess_gemm.input[0])
    others = set().union(*(needed(g, n.input[2]) for n in scatters)) - decision
    others = {k for k in others if g.node[k].op_type != "Compress"}
    produced = {o for k in others for o in g.node[k].output}
    dynamic = input_dependent(g)
    producer = {o: n for n in g.node for o in n.output}
    outside = {i for k in others for i in g.node[k].input if i in dynamic and i not in produced}
    assert len(scatters) == 1 and outside  # one other member, reading the image
    assert all(producer[i].op_type == "Compress" for i in outside), outside


def test_choose_threshold_takes_the_lowest_that_answers_as_the_ensemble():
    table = [
        {"threshold": 0.5, "sent_on": 0.01, "unlike_full": 0.004, "errors": 12},
        {"threshold": 0.9, "sent_on": 0.02, "unlike_full": 0.0006, "errors": 11},
        {"threshold": 0.99, "sent_on": 0.05, "unlike_full": 0.0002, "errors": 10},
        {"threshold": ca.ALWAYS, "sent_on": 1.0, "unlike_full": 0.0, "errors": 10},
    ]
    assert ca.choose_threshold(table, max_disagreement=0.001) == 0.99  # 0.9: one more error
    assert ca.choose_threshold(table, max_disagreement=0.0) == ca.ALWAYS
    table[1]["errors"] = 10
    assert ca.choose_threshold(table, max_disagreement=0.001) == 0.9


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitlab", "cascade", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_cli_writes_a_calibrated_scored_cascade(ensemble, tiny_members, tmp_path, mnist_dir,
                                               mnist_test):  # fmt: skip
    out = tmp_path / "c.onnx"
    done = _cli(str(ensemble), "--out", str(out), "--data-dir", str(mnist_dir))
    assert done.returncode == 0, done.stderr
    assert "cascade written to" in done.stdout and "fit_not_a_digit.py" in done.stdout
    card = read_card(out)
    record = card.architecture.kwargs["cascade"]
    assert record["first"] == 1 and record["threshold"] in (*ca.THRESHOLDS, ca.ALWAYS)
    assert [r["threshold"] for r in record["val"]] == [*ca.THRESHOLDS, ca.ALWAYS]
    assert card.export_check["cascade_max_abs_diff_val"] < 1e-6
    assert card.calibration is not None and card.not_digit is None
    assert "; cascade: member 1 on every image" in card.architecture.summary()
    assert card.metrics.n_test == 10000 and card.architecture.kwargs["members"]
    model = OnnxModel(out)
    x = mnist_test[0][:300].astype(np.float32) / 255
    assert evaluate(model, *mnist_test).errors == card.metrics.test_errors  # the card is true
    read = Predictor(model).predict(mnist_test[0][0])
    assert read.digit == int(np.argmax(read.probabilities)) and sum(
        read.probabilities
    ) == pytest.approx(1)
    # What adapt and the "not a digit" head read: one embedding, all members' widths.
    gemm, _ = find_head(onnx.load_from_string(model.graph).graph)
    _, embeddings = Embedder(model).run(x[:10])
    assert embeddings.shape == (10, 16 + 24) and gemm.input[0].startswith("ensemble_embedding")
    # Not a cascade twice, not a single network, not a member that is not there.
    again = _cli(str(out), "--out", str(tmp_path / "cc.onnx"), "--data-dir", str(mnist_dir))
    assert again.returncode == 2 and "cascade already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    single = _cli(str(tiny_members[0]), "--out", str(tmp_path / "s.onnx"))
    assert single.returncode == 2 and "made from an ensemble" in single.stderr
    bad = _cli(str(ensemble), "--out", str(tmp_path / "b.onnx"), "--first", "5",
               "--data-dir", str(mnist_dir))  # fmt: skip
    assert bad.returncode == 2 and "--first must be 0 to 1" in bad.stderr
    assert not (tmp_path / "b.onnx").exists()


def test_a_graph_without_a_last_linear_layer_is_refused_as_not_an_ensemble():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["s"]), helper.make_node("Softmax", ["s"], ["p"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 10])],
    )
    with pytest.raises(ca.CascadeError, match="made from an ensemble"):
        ca.find_concat(graph)
