"""The model-selection lab: variants, a quick study end to end, ONNX export, Ctrl-C, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from digitlab import select
from digitlab.select import SelectConfig, SelectError, Variant

QUICK = {"n_train": 1500, "n_test": 600}


def _cli(*args: str, mnist_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIGITLAB_DATA": str(mnist_dir), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "digitlab", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


def test_variant_names_are_canonical():
    assert Variant.parse("knn+shift+pca").name == "knn+pca+shift"
    assert Variant.parse("svm+search").techniques == {"search"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown model 'nope'"),
        ("knn+blur", "unknown technique 'blur'"),
        ("svm+pca", "already works on PCA"),
        ("knn+shift+deskew", "do not combine"),
    ],
)
def test_bad_variants_are_refused(text, message):
    with pytest.raises(SelectError, match=message):
        Variant.parse(text)


def test_flags_add_variants_next_to_each_model():
    cfg = SelectConfig(models=("knn", "svm"), pca=True, shift=True)
    assert [v.name for v in cfg.variants()] == ["knn", "knn+pca", "knn+shift", "svm", "svm+shift"]
    assert cfg.curve_variant() == "knn"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 1}, "at least 2"),
        ({"backend": "dask"}, "needs --scheduler"),
        ({"backend": "spark"}, "unknown backend"),
        ({"n_train": 50}, "too small"),
        ({"models": ("sgd",), "curve": "knn"}, "not one of"),
        ({"models": ()}, "no models"),
        ({"models": ("cnn+shift",)}, "takes no techniques"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(SelectError, match=message):
        SelectConfig(**kwargs)


def test_the_cnn_row_is_not_a_zoo_variant():
    cfg = SelectConfig(models=("knn", "cnn"), shift=True)
    assert [v.name for v in cfg.variants()] == ["knn", "knn+shift"] and cfg.include_cnn
    assert SelectConfig(models=("cnn",)).curve_variant() is None  # nothing fitted: no curve
    assert "cnn" in select.DEFAULT_MODELS


def test_config_from_the_cli_options():
    flags = {"shift": False, "deskew": True, "pca": False, "search": False, "save_models": False}
    options = {
        **flags,
        "pca_components": 50,
        "folds": 4,
        "n_train": None,
        "n_test": 500,
        "seed": 3,
        "jobs": 1,
        "backend": "loky",
        "scheduler": None,
        "curve": "none",
    }
    cfg = SelectConfig.from_options(
        models="knn, svm", quick=True, data_dir="d", cnn="m.onnx", **options
    )
    assert cfg.models == ("knn", "svm", "cnn") and cfg.cnn == "m.onnx" and cfg.data_dir == "d"
    assert (cfg.n_train, cfg.n_test) == (select.QUICK_TRAIN, 500)  # --quick fills what is unset
    assert (cfg.deskew, cfg.folds, cfg.seed, cfg.jobs) == (True, 4, 3, 1)
    default = SelectConfig.from_options(models=None, quick=False, data_dir=None, cnn=None)
    assert default == SelectConfig()
    with pytest.raises(TypeError, match="not SelectConfig fields"):
        SelectConfig.from_options(models=None, quick=False, data_dir=None, cnn=None, colour=1)


def test_stratified_subset_keeps_class_shares():
    labels = np.repeat(np.arange(10), [100 + 20 * d for d in range(10)])
    rows = select.stratified_subset(labels, 500, seed=1)
    assert len(rows) == 500 and np.all(np.diff(rows) > 0)
    share = np.bincount(labels[rows], minlength=10) / 500
    np.testing.assert_allclose(share, np.bincount(labels) / len(labels), atol=0.005)
    np.testing.assert_array_equal(rows, select.stratified_subset(labels, 500, seed=1))


# --------------------------------------------------------------------------- #
# A quick study, end to end
# --------------------------------------------------------------------------- #

STUDY_MODELS = ("sgd", "knn", "knn+shift", "knn+deskew", "svm", "logreg+search", "cnn")


@pytest.fixture(scope="module")
def quick_study(mnist_dir, tmp_path_factory):
    cfg = SelectConfig(models=STUDY_MODELS, data_dir=str(mnist_dir), **QUICK)
    study = select.run_study(cfg, tmp_path_factory.mktemp("select") / "run")
    return study, select.load_results(study.run_dir)


def test_quick_study_results(quick_study):
    _, results = quick_study
    assert results.status == "complete" and results.seed == 0
    assert [r.model for r in results.rows] == list(STUDY_MODELS)
    rows = {r.model: r for r in results.rows}
    for r in rows.values():
        if r.model == "cnn":
            continue
        assert r.cross_validated and len(r.cv_scores) == 3 and r.cv_std >= 0
        assert 0.5 < r.test_accuracy <= 1 and r.fit_s >= 0 and r.size_mb > 0
    assert rows["svm"].test_accuracy > 0.9  # 1,500 images are enough for that
    assert rows["knn+shift"].n_fit == 5 * rows["knn"].n_fit == 5 * QUICK["n_train"]
    assert not rows["knn+deskew"].exportable and "not exportable" in rows["knn+deskew"].notes
    search = rows["logreg+search"]
    assert search.search_points == 3 and search.params["C"] in (0.1, 1.0, 10.0)
    assert results.data["n_train"] == QUICK["n_train"] and len(results.data["sha256"]) == 4


def test_the_cnn_row_scores_the_bundled_model_without_cv(quick_study, mnist_test):
    """The CNN beside the zoo: the bundled model on the study's own test images, no CV."""
    from digitlab.evaluate import evaluate
    from digitlab.modelfile import bundled_model_path, load_model

    study, results = quick_study
    cnn = results.row("cnn")
    assert not cnn.cross_validated and cnn.cv_mean is None and cnn.cv_scores == []
    assert cnn.fit_s is None and not cnn.exportable and "not cross-validated" in cnn.notes
    model = load_model()
    # The row's parameters are the card's constructor arguments (an ensemble's: its members').
    assert cnn.source == str(bundled_model_path()) and cnn.params
    assert json.dumps(cnn.params, sort_keys=True) == json.dumps(
        model.card.architecture.kwargs, sort_keys=True)  # fmt: skip
    ev = evaluate(model, study.data.test_images, study.data.y_test)
    assert cnn.test_errors == ev.errors and cnn.test_accuracy == pytest.approx(ev.accuracy)
    assert cnn.test_accuracy > max(r.test_accuracy for r in results.rows if r.model != "cnn")
    assert results.best != "cnn"  # "best" is by cross-validation: the CNN row never competes


def test_csv_matches_json(quick_study):
    import csv

    study, results = quick_study
    with (study.run_dir / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["model"] for t in table] == [r.model for r in results.rows]
    for t, r in zip(table, results.rows, strict=True):
        assert float(t["test_accuracy"]) == pytest.approx(r.test_accuracy)
        assert json.loads(t["params"]) == r.params
        assert t["cross_validated"] == str(r.cross_validated)
        assert (t["cv_mean"] == "") == (not r.cross_validated)


def test_predictions_agree_with_the_table(quick_study):
    study, results = quick_study
    with np.load(study.run_dir / "predictions.npz") as npz:
        y = npz["y_test"]
        assert npz["test_images"].shape == (QUICK["n_test"], 28, 28)
        for r in results.rows:
            scores = npz[f"scores.{r.model}"]
            np.testing.assert_allclose(scores.sum(axis=1), 1, atol=1e-4)
            assert (scores.argmax(1) == y).mean() == pytest.approx(r.test_accuracy)
            assert (scores.argmax(1) != y).sum() == r.test_errors


def test_best_by_cv_is_saved_and_its_onnx_agrees(quick_study, mnist_dir):
    from digitlab.data import dataset_sha256
    from digitlab.modelfile import OnnxModel

    study, results = quick_study
    exportable = [r for r in results.rows if r.exportable]
    best = max(exportable, key=lambda r: r.cv_mean)
    assert results.best == best.model and set(results.saved_models) == {best.model}
    model = OnnxModel(study.run_dir / results.saved_models[best.model])
    card = model.card
    assert card.kind == "sklearn" and card.input.layout == "N784"
    assert card.metrics.test_accuracy == best.test_accuracy
    assert card.training.data_sha256 == dataset_sha256(mnist_dir)
    with np.load(study.run_dir / "predictions.npz") as npz:
        images, y, scores = npz["test_images"], npz["y_test"], npz[f"scores.{best.model}"]
    onnx_pred = model.predict(images.astype(np.float32) / 255)
    assert (onnx_pred == scores.argmax(1)).mean() >= 0.999
    assert (onnx_pred == y).mean() == pytest.approx(best.test_accuracy, abs=0.002)


def test_saved_model_works_with_evaluate_and_the_predictor(quick_study, mnist_dir, mnist_test):
    """A selection-lab model is a model file like the CNN: same CLI, same Predictor."""
    import subprocess
    import sys

    from digitlab.predict import Predictor

    study, results = quick_study
    path = study.run_dir / results.saved_models[results.best]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "digitlab",
            "evaluate",
            "--json",
            "--model",
            str(path),
            "--data-dir",
            str(mnist_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["n"] == 10_000 and result["accuracy"] > 0.9
    images, labels = mnist_test
    reads = Predictor(path).predict_many(images[:50])
    assert np.mean([r.digit == y for r, y in zip(reads, labels[:50], strict=True)]) > 0.85


def test_learning_curve(quick_study):
    _, results = quick_study
    curve = results.learning_curve
    assert curve["model"] == "knn" and curve["sizes"][-1] == QUICK["n_train"]
    assert curve["sizes"] == sorted(curve["sizes"]) and len(curve["sizes"]) >= 4
    assert curve["test_accuracy"][-1] > curve["test_accuracy"][0] + 0.05


@pytest.mark.slow  # two studies; the fast tier keeps one of each kind
def test_same_seed_same_numbers(mnist_dir, tmp_path):
    cfg = SelectConfig(
        models=("sgd",), n_train=600, n_test=300, curve="none", data_dir=str(mnist_dir)
    )
    first = select.run_study(cfg, tmp_path / "a").rows[0]
    second = select.run_study(cfg, tmp_path / "b").rows[0]
    assert first.cv_scores == second.cv_scores
    assert first.test_accuracy == second.test_accuracy


# --------------------------------------------------------------------------- #
# Every zoo model exports to ONNX and agrees with scikit-learn
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def small_data(mnist_dir):
    from digitlab.data import load_mnist
    from digitlab.features import to_rows

    images, labels = load_mnist("train", mnist_dir)
    return to_rows(images[:800]), labels[:800].astype(np.int64), images[-300:]


@pytest.mark.parametrize(
    "name", ["sgd", "logreg", "random_forest", "extra_trees", "knn", "svm", "mlp"]
)
def test_every_model_exports_to_onnx(name, small_data, tmp_path):
    from digitlab.card import Architecture, InputSpec, ModelCard, OutputSpec
    from digitlab.modelfile import OnnxModel, save_model
    from digitlab.models.classical import class_scores, get_spec, has_probabilities

    X, y, test_images = small_data
    spec = get_spec(name)
    model = spec.build({"max_iter": 5} if name == "mlp" else {}, seed=0).fit(X, y)
    card = ModelCard(
        name=name,
        kind="sklearn",
        architecture=Architecture(name=name),
        input=InputSpec(layout="N784"),
        output=OutputSpec(calibrated=has_probabilities(model)),
        classes=list(range(10)),
    )
    path = save_model(tmp_path / f"{name}.onnx", spec.export(model), card)
    x = test_images.astype(np.float32) / 255
    onnx_scores = OnnxModel(path).predict_proba(x)
    expected = class_scores(model, x.reshape(len(x), -1))
    np.testing.assert_allclose(onnx_scores, expected, atol=1e-4)
    assert (onnx_scores.argmax(1) == model.predict(x.reshape(len(x), -1))).all()


# --------------------------------------------------------------------------- #
# The command line: bad input, Ctrl-C, Dask
# --------------------------------------------------------------------------- #


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the CLI entry point in this process; (exit status, stderr)."""
    from digitlab.cli import main

    monkeypatch.setattr(sys, "argv", ["digitlab", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "knn,nope"], "unknown model 'nope'"),
        (["--folds", "1"], "at least 2"),
        (["--backend", "dask"], "needs --scheduler"),
        (["--n-train", "20"], "too small"),
    ],
)
def test_cli_bad_flags_exit_2_with_one_line(args, message, monkeypatch, capsys, tmp_path):
    code, stderr = _main(monkeypatch, capsys, "select", "--quick", "--out", str(tmp_path), *args)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results.json").exists()


def test_cli_quick_table_and_csv_have_the_cnn_row(quick_select):
    out, stdout, stderr = quick_select.out, quick_select.stdout, quick_select.stderr
    assert "cnn: not cross-validated, test 9" in stderr  # the line printed as it finishes
    table = {line.split()[0]: line for line in stdout.splitlines() if line.strip()}
    assert table["cnn"].split()[1] == "-"  # no CV column; the notes (maybe wrapped) say why
    notes = "digit-cnn.onnx as shipped (digitlab train): not cross-validated"
    assert notes in " ".join(stdout.split())
    assert "±" in table["sgd"] and "±" in table["knn"] and "best by cross-validation" in stdout
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].endswith(",notes,cross_validated")
    cnn = next(line for line in lines if line.startswith("cnn,"))
    assert cnn.startswith("cnn,,,0.9") and cnn.endswith(",False")


def test_cli_bad_cnn_model_is_one_line(monkeypatch, capsys, tmp_path):
    args = ["--models", "cnn", "--n-test", "100", "--cnn", str(tmp_path / "nope.onnx")]
    code, stderr = _main(monkeypatch, capsys, "select", "--out", str(tmp_path / "r"), *args)
    assert code == 2 and "model card not found" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_results_of_an_older_or_newer_digitlab_load(quick_study, tmp_path):
    study, results = quick_study
    doc = json.loads((study.run_dir / "results.json").read_text())
    for row in doc["rows"]:
        row.pop("cross_validated")  # written by this version only
        row["from_the_future"] = 1
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert select.load_results(tmp_path).rows == results.rows


def test_cli_refuses_to_overwrite_a_run(quick_study, monkeypatch, capsys):
    study, _ = quick_study
    code, stderr = _main(monkeypatch, capsys, "select", "--quick", "--out", str(study.run_dir))
    assert code == 2 and "already holds a run" in stderr


@pytest.mark.study
def test_ctrl_c_keeps_finished_models(mnist_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "DIGITLAB_DATA": str(mnist_dir)}
    # sgd finishes in a few seconds; mlp on 5 x 2,000 shifted images takes far longer
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitlab",
            "select",
            "--n-train",
            "2000",
            "--n-test",
            "500",
            "--models",
            "sgd,mlp+shift",
            "--out",
            str(run),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((run / "results.json").read_text())["rows"]:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.1)
    assert proc.poll() is None, "the study ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "results of 1 finished model(s)" in stderr
    results = select.load_results(run)
    assert results.status == "interrupted" and [r.model for r in results.rows] == ["sgd"]
    assert (run / "results.csv").read_text().count("\n") == 2  # header + sgd
    with np.load(run / "predictions.npz") as npz:
        assert "scores.sgd" in npz.files


@pytest.mark.cluster
def test_dask_backend_on_a_local_cluster(mnist_dir, tmp_path):
    from distributed import LocalCluster

    args = ["--models", "sgd,knn", "--n-train", "600", "--n-test", "300", "--curve", "none"]
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        before = cluster.scheduler.transition_counter
        result = _cli(
            "select",
            *args,
            "--backend",
            "dask",
            "--scheduler",
            cluster.scheduler_address,
            "--out",
            str(tmp_path / "dask"),
            mnist_dir=mnist_dir,
        )
        assert result.returncode == 0, result.stderr
        assert cluster.scheduler.transition_counter > before + 8  # our 8 fits ran there
    local = SelectConfig(
        models=("sgd", "knn"), n_train=600, n_test=300, curve="none", data_dir=str(mnist_dir)
    )
    loky_rows = select.run_study(local, tmp_path / "loky").rows
    dask_rows = select.load_results(tmp_path / "dask").rows
    for d, lk in zip(dask_rows, loky_rows, strict=True):  # same folds, same seeds: same numbers
        assert d.cv_scores == lk.cv_scores and d.test_accuracy == lk.test_accuracy


# --------------------------------------------------------------------------- #
# Full data (slow): the original notebook's anchors
# --------------------------------------------------------------------------- #


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 13 minutes on 2 busy cores: past the suite's 600 s
def test_full_data_anchors(mnist_dir, tmp_path):
    cfg = SelectConfig(models=("knn", "knn+shift", "svm"), curve="none", data_dir=str(mnist_dir))
    rows = {r.model: r for r in select.run_study(cfg, tmp_path / "run").rows}
    assert rows["knn"].test_accuracy == pytest.approx(0.971, abs=0.002)
    assert rows["knn+shift"].test_accuracy == pytest.approx(0.976, abs=0.002)
    assert rows["svm"].test_accuracy >= 0.985
