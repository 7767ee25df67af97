"""The ``digitlab`` command line: a thin layer over the library.

Each command parses its options, calls one library function and prints the
result. Heavy modules (NumPy, scikit-learn, PyTorch, onnxruntime) are imported
inside the commands so that ``digitlab --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

    from digitlab.card import ModelCard
    from digitlab.predict import FileResult, Predictor
    from digitlab.read import Reader, Reading
    from digitlab.select import ResultRow, Study
    from digitlab.train import TrainResult

app = typer.Typer(
    help="digitlab: train, compare and explain MNIST digit classifiers; draw a digit and "
    "see what the model reads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[default: ...]" must not be read as markup
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Get, check and describe the MNIST files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)  # a long message stays one line, for grep and logs
err_console = Console(stderr=True, soft_wrap=True)

DataDirOption = typer.Option(
    None,
    "--data-dir",
    help="Folder with the MNIST IDX files [default: $DIGITLAB_DATA, else ~/.cache/digitlab/mnist].",
    show_default=False,
)


# --------------------------------------------------------------------------- #
# digitlab data ...
# --------------------------------------------------------------------------- #


@data_app.command("fetch")
def data_fetch(
    data_dir: Path | None = DataDirOption,
    mirror: list[str] | None = typer.Option(
        None, "--mirror", help="Mirror base URL, tried in the order given (repeatable)."
    ),
    retries: int = typer.Option(3, min=1, help="Attempts per mirror."),
    timeout: float = typer.Option(30.0, min=0.1, help="Socket timeout in seconds."),
) -> None:
    """Download the four MNIST files, verify their checksums, write them atomically."""
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from digitlab import data

    cfg = data.FetchConfig(
        mirrors=tuple(mirror) if mirror else data.DEFAULT_MIRRORS, retries=retries, timeout=timeout
    )
    root = data.resolve_data_dir(data_dir)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def hook(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        paths = data.fetch(
            root,
            cfg,
            progress=hook,
            log=lambda m: bar.console.print(escape(m), highlight=False, soft_wrap=True),
        )
    console.print(f"[green]MNIST ready in {escape(str(root))}[/] ({len(paths)} files verified)")


@data_app.command("verify")
def data_verify(data_dir: Path | None = DataDirOption) -> None:
    """Check each file's structure and whether it matches the canonical MNIST checksum."""
    from rich.markup import escape

    from digitlab import data

    root = data.resolve_data_dir(data_dir)
    reports = data.verify(root)
    table = Table(title=f"MNIST files in {escape(str(root))}")
    for col in ("file", "items", "status"):
        table.add_column(col, no_wrap=True)
    for r in reports:
        colour = {"canonical": "green", "error": "red"}.get(r.status, "yellow")
        items = f"{r.count}" if r.count is not None else "-"
        table.add_row(r.name, items, f"[{colour}]{r.status}[/]")
    console.print(table)
    console.print("SHA-256 of the uncompressed content:")
    for r in reports:
        console.print(f"{r.sha256 or '-' * 64}  {r.name}", highlight=False, soft_wrap=True)
    bad = [r for r in reports if not r.ok]
    if bad:
        for r in bad:
            # one line each, whatever the width: soft_wrap; the message is not markup
            err_console.print(f"error: {escape(r.problem or '')}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


@data_app.command("info")
def data_info(
    data_dir: Path | None = DataDirOption,
    grid: Path | None = typer.Option(None, "--grid", help="Write a PNG grid of sample digits."),
    per_class: int = typer.Option(10, min=1, max=50, help="Digits per class in the grid."),
    seed: int = typer.Option(0, help="Seed for picking the grid's samples."),
) -> None:
    """Counts, class balance per split, pixel statistics, and an optional grid of samples."""
    from digitlab import data

    infos = {}
    for split in ("train", "test"):
        images, labels = data.load_mnist(split, data_dir)
        infos[split] = data.describe(images, labels, split)
        if split == "train" and grid is not None:
            data.save_grid(grid, data.sample_grid(images, labels, per_class=per_class, seed=seed))

    train, test = infos["train"], infos["test"]
    table = Table(title="MNIST: images per class")
    for col in ("digit", "train", "share", "test", "share"):
        table.add_column(col, justify="right")
    for d in range(10):
        n_train, n_test = train.class_counts[d], test.class_counts[d]
        table.add_row(
            str(d),
            str(n_train),
            f"{n_train / train.count:.1%}",
            str(n_test),
            f"{n_test / test.count:.1%}",
        )
    table.add_row("total", str(train.count), "", str(test.count), "", style="bold")
    console.print(table)

    stats = Table(title="Pixels (0 = paper, 255 = ink)")
    for col in ("split", "mean", "std", "ink pixels per image"):
        stats.add_column(col, justify="right")
    for info in infos.values():
        stats.add_row(
            info.split,
            f"{info.pixel_mean:.2f}",
            f"{info.pixel_std:.2f}",
            f"{info.ink_fraction:.1%}",
        )
    console.print(stats)
    if grid is not None:
        console.print(f"sample grid written to {grid}")


# --------------------------------------------------------------------------- #
# digitlab train / evaluate
# --------------------------------------------------------------------------- #


def _train_extra(module: str, what: str) -> ModuleType:
    """``digitlab.<module>``, or a one-line error naming the extra it needs (PyTorch, onnx)."""
    try:
        return importlib.import_module(f"digitlab.{module}")
    except ImportError as e:
        raise DigitlabError(f"{what} the extra: pip install 'digitlab[train]' ({e})") from None


@app.command("train")
def train_cmd(
    data_dir: Path | None = DataDirOption,
    out: Path | None = typer.Option(None, "--out", help="Run folder [default: runs/<time>-train]."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the interrupted run in this folder, with its own config."
    ),
    recipe: str = typer.Option(
        "default",
        help="Named preset: default (40 epochs), cpu-fast (~99.7 % in ~15 min on one CPU "
        "thread, docs/train-cpu.md), cpu-lowres (cpu-fast seeing low-resolution scans too), or "
        "cpu-people (cpu-lowres with writer-style digits, docs/people.md). "
        "Options below override it.",
    ),
    epochs: int | None = typer.Option(
        None, min=1, help="Passes over the training set [default: the recipe's; 1 with --quick]."
    ),
    batch_size: int | None = typer.Option(None, min=8, help="[default: the recipe's, 128]"),
    lr: float | None = typer.Option(
        None, help="Peak learning rate of the one-cycle schedule [default: the recipe's, 3e-3]."
    ),
    seed: int = typer.Option(0, help="Seed for weights, split, shuffling and augmentation."),
    val_seed: int | None = typer.Option(
        None, "--val-seed", help="Seed of the held-out validation split [default: --seed]."
    ),
    device: str | None = typer.Option(
        None, help="cpu, cuda, or auto (cuda when available) [default: the recipe's]."
    ),
    quick: bool = typer.Option(False, "--quick", help="Tiny subset (2,000 images): a dry run."),
    teacher: Path | None = typer.Option(
        None,
        "--teacher",
        help="Distil: also learn from this model file's probabilities on every batch "
        "(e.g. an ensemble from `digitlab ensemble`).",
    ),
    distill_weight: float = typer.Option(
        0.7, "--distill-weight", min=0.0, max=1.0, help="Share of the loss that follows --teacher."
    ),
    distill_temperature: float = typer.Option(
        2.0, "--distill-temperature", min=0.5, max=20.0, help="Softening of both distributions."
    ),
    export: Path | None = typer.Option(
        None, "--export", help="Also copy the finished model (+ card) to this .onnx path."
    ),
) -> None:
    """Train the digit CNN (PyTorch), checkpoint every epoch, export ONNX + model card."""
    tr = _train_extra("train", "training needs")
    if resume is not None:
        cfg, run_dir = tr.config_from_checkpoint(resume), resume
    else:
        cfg = tr.recipe_config(
            recipe,
            epochs=epochs or (1 if quick else None),
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            val_seed=val_seed,
            device=device,
            quick=quick,
            distill=None
            if teacher is None
            else tr.DistillConfig(
                str(teacher), tr.teacher_sha256(teacher), distill_weight, distill_temperature
            ),
        )
        run_dir = out or tr.default_run_dir()
    with _train_progress() as hook:
        try:
            result = tr.train(cfg, run_dir, data_dir, resume=resume is not None, progress=hook)
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: the last finished epoch is saved in {run_dir}; "
                f"continue with: digitlab train --resume {run_dir}"
            )
            raise typer.Exit(130) from None
    _print_trained(result)
    if export is not None:
        from digitlab.modelfile import save_model

        save_model(export, result.model_path.read_bytes(), result.card)
        console.print(f"exported to {export}")


def _print_trained(result: TrainResult) -> None:
    """What `digitlab train` made: where, how accurate, how faithful the export, calibration."""
    card = result.card
    m = card.metrics
    console.print(
        f"[green]model written to {result.model_path}[/]: test accuracy "
        f"{m.test_accuracy:.2%} ({m.test_errors} errors / {m.n_test}), "
        f"export max abs diff {card.export_check['max_abs_diff_vs_torch']:.2e}"
    )
    console.print(_calibration_line(card), highlight=False)


class _train_progress:
    """A rich progress bar over all training steps, fed by `train()`'s callback."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
        )
        self.bar.__enter__()
        self.task = None
        return self.hook

    def hook(self, kind: str, **kw) -> None:
        if kind == "start":
            self.task = self.bar.add_task("training", total=kw["total"], completed=kw["done"])
            self.bar.console.print(f"training on {kw['device']}")
        elif kind == "step":
            self.bar.update(self.task, advance=1, description=f"loss {kw['loss']:.3f}")
        elif kind == "epoch":
            self.bar.console.print(
                f"epoch {kw['epoch']}/{kw['epochs']}: loss {kw['loss']:.4f}, "
                f"validation accuracy {kw['val']:.2%}"
            )

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


@app.command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(..., help="The float32 model (.onnx with its card)."),
    out: Path = typer.Option(..., "--out", help="Where to write the int8 model (.onnx)."),
    data_dir: Path | None = DataDirOption,
    calibration: int = typer.Option(1024, min=16, help="Training images for calibration."),
) -> None:
    """Quantise a model to int8 (calibrated on training images); re-measure it on the test set."""
    q = _train_extra("quantize", "quantizing needs")
    path, card = q.quantize_model(model, out, data_dir, q.QuantizeConfig(calibration))
    m, parent = card.metrics, card.quantization.parent_metrics
    parent_errors = parent.test_errors if parent and parent.test_errors is not None else "?"
    console.print(
        f"[green]int8 model written to {path}[/] ({path.stat().st_size / 1e6:.2f} MB): "
        f"test accuracy {m.test_accuracy:.2%} ({m.test_errors} errors); "
        f"float model: {parent_errors} errors"
    )
    if card.calibration is not None:
        console.print(_calibration_line(card), highlight=False)
    else:
        console.print("not calibrated: the parent's card records no held-out validation split")


@app.command("ensemble")
def ensemble_cmd(
    models: list[Path] = typer.Argument(..., help="Two or more trained models (.onnx + card)."),
    out: Path = typer.Option(..., "--out", help="Where to write the ensemble (.onnx)."),
    name: str = typer.Option("digit-ensemble", help="The name on the ensemble's card."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Average trained models' logits in one graph; calibrate it and score it on the test set."""
    en = _train_extra("ensemble", "ensembles need")
    path, card = en.ensemble_model(models, out, data_dir, name)
    m = card.metrics
    console.print(
        f"[green]ensemble of {len(models)} written to {path}[/] "
        f"({path.stat().st_size / 1e6:.2f} MB): test accuracy {m.test_accuracy:.2%} "
        f"({m.test_errors} errors)"
    )
    console.print(_calibration_line(card), highlight=False)


@app.command("cascade")
def cascade_cmd(
    model: Path = typer.Argument(..., help="An ensemble from `digitlab ensemble` (.onnx + card)."),
    out: Path = typer.Option(..., "--out", help="Where to write the cascade (.onnx)."),
    first: int | None = typer.Option(
        None, "--first", min=0, help="Member run on every image [default: the cheapest]."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        min=0.0,
        max=2.0,
        help="Send on images guessed below this top probability [default: set on validation].",
    ),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Run an ensemble's cheapest member first, the others only on the images it is unsure of."""
    ca = _train_extra("cascade", "cascades need")
    config = ca.CascadeConfig(first=first, threshold=threshold)
    path, card = ca.cascade_model(model, out, config, data_dir)
    m, record = card.metrics, card.architecture.kwargs["cascade"]
    console.print(
        f"[green]cascade written to {path}[/] ({path.stat().st_size / 1e6:.2f} MB): member "
        f"{record['first']} first, the others on {record['val_sent_on']:.1%} of the "
        f"validation images (threshold {record['threshold']}); test accuracy "
        f"{m.test_accuracy:.2%} ({m.test_errors} errors)"
    )
    console.print(_calibration_line(card), highlight=False)
    console.print(
        'the "not a digit" detector is not carried over: fit it again with '
        f"python scripts/fit_not_a_digit.py {path}",
        highlight=False,
    )


@app.command("evaluate")
def evaluate_cmd(
    model: Path | None = typer.Option(None, "--model", help="Model file [default: bundled]."),
    data_dir: Path | None = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="PNG with the confusion and error matrices, the reliability diagram and the "
        "risk-coverage curve [default: confusion.png in the current folder].",
    ),
) -> None:
    """Score a model file (the CNN or a selection-lab model) on the 10,000 test images."""
    import json

    from digitlab.data import load_mnist
    from digitlab.evaluate import evaluate, plot_evaluation
    from digitlab.modelfile import load_model

    m = load_model(model)
    images, labels = load_mnist("test", data_dir)
    ev = evaluate(m, images, labels)
    if as_json:
        print(json.dumps(ev.to_json()))
        return
    console.print(
        f"{m.path.name}: test accuracy [bold]{ev.accuracy:.2%}[/] ({ev.errors} errors / {ev.n})"
    )
    console.print(
        f"confidence: ECE {ev.ece:.2%}, NLL {ev.nll:.4f}, Brier {ev.brier:.4f}, "
        f"median confidence when right {ev.median_confidence_correct:.2%}",
        highlight=False,
    )
    table = Table(title="Per-class accuracy")
    table.add_column("digit")
    table.add_column("accuracy", justify="right")
    for d, acc in enumerate(ev.per_class_accuracy):
        table.add_row(str(d), f"{acc:.2%}")
    console.print(table)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        console.print("plots need the training extra: pip install 'digitlab[train]'")
        return
    out = plot or Path("confusion.png")
    console.print(f"plots written to {plot_evaluation(ev, out)}")


@app.command("calibrate")
def calibrate_cmd(
    model: Path = typer.Argument(..., help="The model to calibrate (.onnx with its card)."),
    out: Path | None = typer.Option(
        None, "--out", help="Write the calibrated copy here (.onnx) [default: in place]."
    ),
    data_dir: Path | None = DataDirOption,
    val_size: int | None = typer.Option(
        None, "--val-size", help="Fit on this many training images [default: the card's split]."
    ),
    val_seed: int | None = typer.Option(
        None, "--val-seed", help="Seed that picks them (digitlab.data.split_indices)."
    ),
) -> None:
    """Fit a temperature on held-out validation images; store it in the graph and the card."""
    from digitlab import calibrate as cal

    cal.require_onnx()  # fail before reading any data
    path, card = cal.calibrate_model(model, out, data_dir, val_size, val_seed)
    console.print(f"[green]calibrated model written to {path}[/]")
    console.print(_calibration_line(card), highlight=False)
    m = card.metrics
    console.print(
        f"test ({m.n_test} images): accuracy {m.test_accuracy:.2%} "
        f"({m.test_errors} errors), ECE {m.test_ece:.2%}, NLL {m.test_nll:.4f}, "
        f"median confidence when right {m.test_median_confidence_correct:.2%}",
        highlight=False,
    )


def _calibration_line(card: ModelCard) -> str:
    """One line: the temperature, what it was fitted on, the validation figures it moved."""
    c = card.calibration
    before, after, unsure = c.val_before, c.val_after, c.val_unsure
    caught = unsure["errors_flagged"]
    return (
        f"temperature {c.temperature:.4f} fitted on {c.fitted_on}: ECE "
        f"{before['ece']:.2%} -> {after['ece']:.2%}, NLL {before['nll']:.4f} -> "
        f"{after['nll']:.4f}; unsure below {c.min_confidence:.2%} confidence (flags "
        f"{unsure['flagged']:.2%} of those images"
        + (f", {caught:.0%} of their errors)" if caught is not None else ")")
    )


# --------------------------------------------------------------------------- #
# digitlab predict (issue 5)
# --------------------------------------------------------------------------- #


@app.command("predict")
def predict_cmd(
    files: list[Path] = typer.Argument(
        ..., help="Image files, .json drawings or grids, or folders of them."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file."),
    save_normalized: Path | None = typer.Option(
        None, "--save-normalized", help="Write the 28x28 images the model saw (PNG, x10) here."
    ),
    model: Path | None = typer.Option(None, "--model", help="Model file [default: bundled model]."),
) -> None:
    """Read the digit or number in each image (PNG, JPEG, BMP, GIF, WebP) or .json file (a
    drawing {"strokes": ...} or a grid {"pixels": ...}, as the web API takes them), one line
    per file. --json adds "text" (the number), "digits" (each with its box), and the
    number's "confidence", "unsure" and "reasons"; a one-digit answer keeps every field it
    had ("digit", "probabilities", ...)."""
    import json

    from digitlab.predict import Predictor, confidence_text, expand_paths
    from digitlab.read import Reader

    paths = expand_paths(files)
    if not paths:  # only folders, holding only sub-folders (or nothing): say so, not silence
        named = ", ".join(str(f) for f in files)
        raise DigitlabError(
            f"no files to read in {named} (a folder's sub-folders are not read: "
            "name them, e.g. DIR/*/)"
        )
    predictor = Predictor(model)
    reader = Reader(predictor)
    failed = 0
    for r in _predict_files(predictor, paths, save_normalized):
        p = r.prediction
        number, error = (None, r.error) if p is None else _read_number(reader, r.path)
        if number is None:
            p = None
        if as_json:  # with how the ink was found: polarity, paper level, threshold, flattening
            fields = {"error": error} if p is None or number is None else {
                **number.to_dict(), **(p.to_dict() if len(number.digits) <= 1 else {}),
                "preprocessing": p.normalized.diagnostics()}  # fmt: skip
            typer.echo(json.dumps({"path": str(r.path), **fields}))
        elif p is None or number is None:
            typer.echo(f"error: {error}", err=True)
        else:
            notes = "".join(f"  ({note})" for note in p.normalized.notes)  # e.g. animated
            if len(number.digits) > 1:  # a number: its digits, and how sure of all of them
                unsure = f"  unsure: {', '.join(number.reasons)}" if number.unsure else ""
                read = f"{number.text}  confidence {confidence_text(number.confidence)}"
                typer.echo(f"{r.path}: {read}{unsure}{notes}")
            elif p.digit is None and "not a digit" in p.reasons:  # the detector's answer
                typer.echo(f"{r.path}: not a digit  (closest: {p.closest}, "
                           f"confidence {confidence_text(p.confidence)}){notes}")  # fmt: skip
            elif p.digit is None:
                typer.echo(f"{r.path}: no digit (no ink){notes}")
            else:
                unsure = f"  unsure: {', '.join(p.reasons)}" if p.unsure else ""
                read = f"{p.digit}  confidence {confidence_text(p.confidence)}"
                typer.echo(f"{r.path}: {read}{unsure}{notes}")
        failed += p is None
    if failed:
        typer.echo(f"error: {failed} file(s) could not be read", err=True)
        raise typer.Exit(2)


def _read_number(reader: Reader, path: Path) -> tuple[Reading | None, str | None]:
    """The number in the file at ``path`` (a .json file as a drawing or grid), or why not
    (more than `digitlab.read.MAX_DIGITS` digits, ...)."""
    from digitlab.errors import InputError
    from digitlab.inputs import digit_file

    try:
        source = (
            digit_file(path, reader.predictor.config) if path.suffix.lower() == ".json" else path
        )
        return reader.read(source), None
    except InputError as e:
        return None, str(e)


def _predict_files(
    predictor: Predictor, paths: list[Path], save_dir: Path | None
) -> Iterator[FileResult]:
    """`predict_files`, in the same order, with each .json file read as a drawing or a grid
    by `digitlab.inputs` (the models the web API checks its bodies with)."""
    from digitlab.errors import InputError
    from digitlab.inputs import digit_file
    from digitlab.predict import FileResult, predict_files
    from digitlab.preprocess import preprocess, save_normalized

    config = predictor.config
    images = predict_files(predictor, [p for p in paths if p.suffix.lower() != ".json"], save_dir)
    for path in paths:
        if path.suffix.lower() != ".json":
            yield next(images)
            continue
        try:
            norm = preprocess(digit_file(path, config), config)
        except InputError as e:
            yield FileResult(path, error=str(e))
            continue
        saved = None
        if save_dir is not None:  # "7.json.png": never the name of 7.png's image
            try:
                save_dir.mkdir(parents=True, exist_ok=True)
                saved = save_normalized(norm.image, save_dir / f"{path.name}.png")
            except OSError as e:
                raise InputError(f"{save_dir}: cannot write ({e.strerror or e})") from None
        yield FileResult(path, predictor.predict_normalized([norm])[0], saved=saved)


# --------------------------------------------------------------------------- #
# ---- digitlab adapt (issue 13) ----
# --------------------------------------------------------------------------- #


@app.command("adapt")
def adapt_cmd(
    folders: list[Path] | None = typer.Argument(
        None, metavar="DIR", help="Folders of labelled images: DIR/0/*.png ... DIR/9/*.png."
    ),
    db: Path | None = typer.Option(
        None, "--db", help="A corrections store to learn from (as for serve).", show_default=False
    ),
    model: Path | None = typer.Option(None, "--model", help="Base model [default: bundled]."),
    out: Path = typer.Option(..., "--out", help="Where to write the personal model (.onnx)."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Learn someone's handwriting from a few examples: write a personal model (no PyTorch).

    Its MNIST test accuracy may not fall by more than 0.05 points below the base's; its
    card records the examples, the method and the measured figures.
    """
    from rich.markup import escape

    from digitlab import adapt as ad

    if not folders and db is None:
        raise DigitlabError("nothing to learn from: give image folders (DIR/0 ... DIR/9), --db")
    from digitlab.derive import output_path
    from digitlab.modelfile import bundled_model_path

    output_path(out, base=model if model is not None else bundled_model_path())  # before reading
    with _AdaptProgress() as progress:
        examples = [e for d in folders or [] for e in ad.examples_from_folder(d, progress=progress)]
        if db is not None:
            examples += ad.examples_from_store(db)
        path, card = ad.adapt(examples, out, model, data_dir=data_dir, progress=progress)
    a = card.adaptation
    counts = ", ".join(f"{n} x {c}" for c, n in a.examples.items() if n)
    narrowed = f"; prototypes narrowed to {a.strength:.0%} by the guard" if a.strength < 1 else ""
    console.print(
        f"[green]personal model written to {escape(str(path))}[/]: learned from "
        f"{a.n_examples} examples ({counts})"
    )
    console.print(
        f"MNIST test accuracy {a.mnist_test_before:.2%} -> {a.mnist_test_after:.2%}; "
        f"on the examples {a.examples_accuracy_before:.2%} -> "
        f"{a.examples_accuracy_after:.2%}{narrowed}",
        highlight=False,
    )
    console.print(_calibration_line(card), highlight=False)


class _AdaptProgress:
    """A transient rich progress bar per stage, fed by `digitlab.adapt`'s callback."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress

        columns = ("{task.description}", BarColumn(), MofNCompleteColumn())
        self.bar = Progress(*columns, console=err_console, transient=True)
        self.bar.__enter__()
        self.tasks: dict[str, int] = {}
        return self.update

    def update(self, what: str, done: int, total: int) -> None:
        from rich.markup import escape

        if what not in self.tasks:
            self.tasks[what] = self.bar.add_task(escape(what), total=total)
        self.bar.update(self.tasks[what], completed=done, total=total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


# --------------------------------------------------------------------------- #
# ---- digitlab select ----
# --------------------------------------------------------------------------- #


# The longer `digitlab select` options, so that the command fits on a screen.
ModelsOption = typer.Option(
    None,
    "--models",
    help="Comma-separated models or variants, e.g. 'knn,knn+shift,svm+deskew,cnn' (techniques: "
    "pca, deskew, shift, search; cnn: a trained model file scored as shipped, not "
    "cross-validated) [default: the whole zoo and cnn].",
    show_default=False,
)
QuickOption = typer.Option(
    False,
    "--quick",
    help="A stratified subset: 2,000 train / 1,000 test images (for demos and tests).",
)
RunOption = typer.Option(
    None,
    "--out",
    help="Run folder [default: runs/<timestamp>-select under the current folder].",
    show_default=False,
)
SaveModelsOption = typer.Option(
    False, "--save-models", help="Save every exportable model as ONNX, not only the best."
)
CnnOption = typer.Option(
    None, "--cnn", help="Model file the cnn row scores [default: the bundled model]."
)


@app.command("select")
def select_cmd(
    ctx: typer.Context,
    models: str | None = ModelsOption,
    shift: bool = typer.Option(
        False, "--shift", help="Add each model trained on one-pixel shifts."
    ),
    deskew: bool = typer.Option(False, "--deskew", help="Add each model on deskewed images."),
    pca: bool = typer.Option(False, "--pca", help="Add each model on PCA features."),
    search: bool = typer.Option(False, "--search", help="Add each model grid-searched by CV."),
    pca_components: int = typer.Option(50, help="Components kept by --pca."),
    folds: int = typer.Option(3, help="Cross-validation folds (stratified)."),
    quick: bool = QuickOption,
    n_train: int | None = typer.Option(None, help="Training images (stratified subset)."),
    n_test: int | None = typer.Option(None, help="Test images (stratified subset)."),
    seed: int = typer.Option(0, help="Seed for subsets, folds and models."),
    jobs: int = typer.Option(-1, help="Parallel joblib workers (-1: all cores)."),
    backend: str = typer.Option("loky", help="joblib backend: loky (this machine) or dask."),
    scheduler: str | None = typer.Option(None, help="Dask scheduler address (--backend dask)."),
    out: Path | None = RunOption,
    save_models: bool = SaveModelsOption,
    curve: str = typer.Option("auto", help="Model for the learning curve ('none': skip)."),
    cnn: Path | None = CnnOption,
    list_models: bool = typer.Option(False, "--list", help="List the model zoo and exit."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Compare classifiers by cross-validation, score them on the test set, save the best."""
    from digitlab import select

    if list_models:
        return _print_zoo()
    # Every other option is a SelectConfig field of the same name.
    options = {k: v for k, v in ctx.params.items() if k not in ("out", "list_models")}
    config = select.SelectConfig.from_options(**options)
    run_dir = select.resolve_run_dir(out)
    with _SelectProgress() as progress:
        try:
            study = select.run_study(config, run_dir, progress.on_task, progress.on_row)
        except KeyboardInterrupt:
            progress.bar.stop()
            _select_interrupted(run_dir)
    _print_select_table(study.rows, study.best)
    _print_select_summary(study)


def _select_interrupted(run_dir: Path) -> None:
    """Ctrl-C: say what was kept, exit 130."""
    from rich.markup import escape

    from digitlab.select import load_results

    done = len(load_results(run_dir).rows) if (run_dir / "results.json").exists() else 0
    err_console.print(
        f"interrupted: the results of {done} finished model(s) are in {escape(str(run_dir))}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(130) from None


def _print_select_summary(study: Study) -> None:
    from rich.markup import escape

    where = escape(str(study.run_dir))
    console.print(
        f"wall time {study.wall_s:.0f} s; results in {where}", highlight=False, soft_wrap=True
    )
    if study.best:
        console.print(
            f"best by cross-validation: {escape(study.best.model)}, saved as "
            f"{escape(study.saved[study.best.model])}",
            highlight=False,
        )


class _SelectProgress:
    """A rich progress bar over a study's tasks, and a line per finished model."""

    def __enter__(self) -> _SelectProgress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            "eta",
            TimeRemainingColumn(),
        )
        # transient: the bar goes when the study ends (or fails: an error stays one line)
        self.bar = Progress(*columns, console=err_console, transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("loading data", total=None)
        return self

    def on_task(self, done: int, total: int, label: str) -> None:
        from rich.markup import escape

        self.bar.update(self.task, completed=done, total=total, description=escape(label))

    def on_row(self, row: ResultRow) -> None:
        from rich.markup import escape

        cv = (
            f"CV {row.cv_mean:.2%} ± {row.cv_std or 0:.2%}"
            if row.cross_validated
            else "not cross-validated"
        )
        self.bar.console.print(
            f"{escape(row.model)}: {cv}, test {row.test_accuracy:.2%}", highlight=False
        )

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)


def _print_select_table(rows: list[ResultRow], best: ResultRow | None) -> None:
    from rich import box
    from rich.markup import escape

    table = Table(title="digitlab select (best by CV in bold; cnn: no CV)", box=box.SIMPLE_HEAD)
    # (header, no_wrap): numbers never wrap; the notes take what width is left
    columns = [
        ("model", True),
        ("CV acc. %", True),
        ("test %", True),
        ("errors", True),
        ("fit s", True),
        ("pred s/1k", True),
        ("MB", True),
        ("notes", False),
    ]
    for header, no_wrap in columns:
        justify = "left" if header in ("model", "notes") else "right"
        table.add_column(header, justify=justify, no_wrap=no_wrap)
    for r in rows:
        cv = f"{r.cv_mean * 100:.2f} ± {(r.cv_std or 0) * 100:.2f}" if r.cross_validated else "-"
        table.add_row(
            escape(r.model),
            cv,
            f"{r.test_accuracy * 100:.2f}",
            str(r.test_errors),
            f"{r.fit_s:.1f}" if r.fit_s is not None else "-",
            f"{r.predict_s_per_1k:.3f}",
            f"{r.size_mb:.1f}",
            escape(r.notes),
            style="bold" if best and r.model == best.model else None,
        )
    console.print(table)


def _print_zoo() -> None:
    from digitlab.models.classical import REGISTRY

    table = Table(title="digitlab select: the model zoo")
    for col in ("name", "model", "defaults", "search grid", "notes"):
        table.add_column(col)
    for spec in REGISTRY.values():
        table.add_row(
            spec.name, spec.title, str(dict(spec.defaults)), str(dict(spec.grid)), spec.notes
        )
    table.add_row(
        "cnn",
        "the digit CNN, a trained model file (--cnn PATH)",
        "-",
        "-",
        "scored as shipped: not cross-validated",
    )
    console.print(table)


# --------------------------------------------------------------------------- #
# ---- digitlab report ----
# --------------------------------------------------------------------------- #


@app.command("report")
def report_cmd(
    path: Path = typer.Argument(
        ..., help="A `digitlab select` run folder, a `digitlab train` run folder, or a model file."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="The run's model whose errors the "
        "report shows [default: the best by cross-validation].",
    ),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Write an HTML report with plots (report.html in the run folder)."""
    from rich.markup import escape

    from digitlab.report import write_report

    written = write_report(path, model=model, data_dir=data_dir)
    console.print(f"report written to {escape(str(written))}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- #
# ---- digitlab draw (issue 7) ----
# --------------------------------------------------------------------------- #


@app.command("draw")
def draw_cmd(
    model: Path | None = typer.Option(None, "--model", help="Model file [default: bundled model]."),
    db: Path | None = typer.Option(
        None,
        "--db",
        help="Corrections database (default: $DIGITLAB_DB, else "
        "~/.local/share/digitlab/corrections.sqlite3), as for serve.",
        show_default=False,
    ),
    learn: bool = typer.Option(
        True, "--learn/--no-learn", help="Learn my handwriting from the corrections I make."
    ),
) -> None:
    """Open a window to draw a digit: Enter predicts (and prints it), Delete clears."""
    from digitlab.desktop import run

    run(model, db, learn)


# --------------------------------------------------------------------------- #
# ---- digitlab serve (issue 6) ----
# --------------------------------------------------------------------------- #


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    model: Path | None = typer.Option(
        None, "--model", help="Model file (default: the bundled model).", show_default=False
    ),
    db: Path | None = typer.Option(
        None,
        "--db",
        help="Corrections database (default: $DIGITLAB_DB, else "
        "~/.local/share/digitlab/corrections.sqlite3).",
        show_default=False,
    ),
    allowed_hosts: str | None = typer.Option(
        None,
        "--allowed-hosts",
        show_default=False,
        help="Comma-separated Host names to answer (default: local names only, plus --host; "
        "'*' for any). Others get 400: a defence against DNS rebinding.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="DIGITLAB_TOKEN",
        show_default=False,
        help="Token needed to read or export corrections (default on a non-local --host: a "
        "new random one, printed).",
    ),
    header_timeout: float = typer.Option(
        10.0,
        "--header-timeout",
        min=0.1,
        max=3600,
        help="Seconds a client has to send its request's headers; slower clients are disconnected.",
    ),
    learn: bool | None = typer.Option(
        None,
        "--learn/--no-learn",
        show_default=False,
        help="Learn the user's handwriting from the corrections sent (default: on when local, "
        "off on a network address).",
    ),
    body_timeout: float = typer.Option(
        60.0,
        "--body-timeout",
        min=0.1,
        max=3600,
        help="Seconds a client has to send its request's body once the headers are in.",
    ),
    forwarded_allow_ips: str | None = typer.Option(
        None,
        "--forwarded-allow-ips",
        show_default=False,
        help="Behind a reverse proxy: its addresses, comma-separated ('*': any), whose "
        "X-Forwarded-For/-Proto headers are believed (default: none; a client's own "
        "header would choose the address its rate limit goes by).",
    ),
    decode_budget: float | None = typer.Option(
        None,
        "--decode-budget",
        min=0,
        show_default=False,
        help="Megapixels of uploaded images one client may have decoded a minute; 0: no "
        "limit [default: $DIGITLAB_DECODE_BUDGET, else 200].",
    ),
) -> None:
    """Start the web app: draw a digit in the browser and see what the model reads.

    Local by default. With a non-local --host it warns, asks for a token to read the
    stored drawings, and answers only the Host names in --allowed-hosts.
    """
    from digitlab.modelfile import load_model
    from digitlab.web.app import serve

    # A bad model or card is one line and exit 2 here, before the server binds its port.
    load_model(model)
    hosts = [h.strip() for h in allowed_hosts.split(",") if h.strip()] if allowed_hosts else None
    timeouts = (header_timeout, body_timeout)
    serve(host, port, model, db, allowed_hosts=hosts, token=token, timeouts=timeouts, learn=learn,
          forwarded_allow_ips=forwarded_allow_ips, decode_budget=decode_budget)  # fmt: skip


# --------------------------------------------------------------------------- #
# ---- digitlab export-site (issue 14) ----
# --------------------------------------------------------------------------- #


@app.command("export-site")
def export_site_cmd(
    out: Path = typer.Argument(
        ...,
        metavar="DIR",
        help="Folder for the site: new, empty, or an earlier export (only its files are "
        "replaced; others, such as .git or CNAME, stay).",
    ),
    model: Path | None = typer.Option(
        None, "--model", help="Model file (default: the bundled model).", show_default=False
    ),
) -> None:
    """Write the drawing page, the model and its runtime as a static site.

    The site predicts in the browser, served by any static file server, with no Python;
    corrections stay in the browser and download as NDJSON.
    """
    from rich.markup import escape

    from digitlab.site import export_site, site_files

    site = export_site(out, model)
    files = site_files(site)  # its own: not what else the folder holds (.git, CNAME)
    size = sum(f.stat().st_size for f in files) / 1e6
    console.print(f"site written to {escape(str(site))} ({len(files)} files, {size:.1f} MB); "
                  f"try: python -m http.server -d {escape(str(site))} -b 127.0.0.1 8000",
                  highlight=False)  # fmt: skip


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


# The library names the parameters of its calls in its errors (`DigitlabError.naming`); the
# user of the CLI knows them as these options and arguments.
FLAGS = {
    "out": "--out",
    "model": "MODEL",
    "models": "MODELS",
    "base": "--model",
    "first": "--first",
    "val_size": "--val-size",
    "val_seed": "--val-seed",
}


def main() -> None:
    """Run the CLI; a `DigitlabError` becomes one line on stderr and exit status 2, and so
    does a file the user may not read (a PermissionError: Python's ``Path.exists`` and
    ``is_dir`` raise it for a path under a folder without search permission)."""
    try:
        app()
    except DigitlabError as e:
        _fail(e.named(FLAGS), e.exit_code)
    except PermissionError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}permission denied", 2)


def _fail(message: str, code: int) -> NoReturn:
    from rich.markup import escape

    # soft_wrap: one error, one line, whatever the terminal width (scripts grep for it).
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)
