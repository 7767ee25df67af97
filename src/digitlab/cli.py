"""The ``digitlab`` command line: a thin layer over the library.

Each command parses its options, calls one library function and prints the
result. Heavy modules (NumPy, scikit-learn, PyTorch, onnxruntime) are imported
inside the commands so that ``digitlab --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from digitlab.errors import DigitlabError

app = typer.Typer(
    help="digitlab: train, compare and explain MNIST digit classifiers; draw a digit and "
    "see what the model reads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Get, check and describe the MNIST files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)

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
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from digitlab import data

    cfg = data.FetchConfig(
        mirrors=tuple(mirror) if mirror else data.DEFAULT_MIRRORS, retries=retries, timeout=timeout
    )
    root = data.resolve_data_dir(data_dir)
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err_console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def hook(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        paths = data.fetch(root, cfg, progress=hook, log=lambda m: bar.console.print(m))
    console.print(f"[green]MNIST ready in {root}[/] ({len(paths)} files verified)")


@data_app.command("verify")
def data_verify(data_dir: Path | None = DataDirOption) -> None:
    """Check each file's structure and whether it matches the canonical MNIST checksum."""
    from digitlab import data

    root = data.resolve_data_dir(data_dir)
    reports = data.verify(root)
    table = Table(title=f"MNIST files in {root}")
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
            err_console.print(f"error: {r.problem}")
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
        table.add_row(str(d), str(train.class_counts[d]), f"{train.class_counts[d] / train.count:.1%}",
                      str(test.class_counts[d]), f"{test.class_counts[d] / test.count:.1%}")  # fmt: skip
    table.add_row("total", str(train.count), "", str(test.count), "", style="bold")
    console.print(table)

    stats = Table(title="Pixels (0 = paper, 255 = ink)")
    for col in ("split", "mean", "std", "ink pixels per image"):
        stats.add_column(col, justify="right")
    for info in infos.values():
        stats.add_row(info.split, f"{info.pixel_mean:.2f}", f"{info.pixel_std:.2f}",
                      f"{info.ink_fraction:.1%}")  # fmt: skip
    console.print(stats)
    if grid is not None:
        console.print(f"sample grid written to {grid}")


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def main() -> None:
    """Run the CLI; a `DigitlabError` becomes one line on stderr and exit status 2."""
    try:
        app()
    except DigitlabError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
