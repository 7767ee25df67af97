"""Cold start of `digitlab predict one.png` and `digitlab --help` in fresh processes.

Each command runs under ``/usr/bin/time -v`` several times; we report the
median wall time and the largest peak memory (maximum resident set size).

    python benchmarks/cold_start.py [--runs 5] [--model PATH]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw


def one_png(folder: Path) -> Path:
    """A hand-drawn-looking 7 on a 280 x 280 canvas."""
    img = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(img).line([(70, 60), (200, 60), (120, 230)], fill=0, width=18, joint="curve")
    path = folder / "one.png"
    img.save(path)
    return path


def measure(cmd: list[str], runs: int) -> tuple[float, float, str]:
    """(median wall seconds, max peak MB, last stdout line) over ``runs`` fresh processes."""
    walls, peaks, out = [], [], ""
    for _ in range(runs):
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
        wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if wall is None or rss is None:
            raise SystemExit(f"could not read /usr/bin/time output:\n{proc.stderr}")
        hours, minutes, seconds = wall.groups()
        walls.append(int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds))
        peaks.append(int(rss.group(1)) / 1024)
        out = (proc.stdout.strip().splitlines() or [""])[-1]
    return statistics.median(walls), max(peaks), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default=None, help="model file [default: the bundled model]")
    args = ap.parse_args(argv)
    exe = shutil.which("digitlab") or str(Path(sys.executable).parent / "digitlab")
    with tempfile.TemporaryDirectory() as tmp:
        png = one_png(Path(tmp))
        predict = [exe, "predict", str(png)] + (["--model", args.model] if args.model else [])
        for name, cmd in (
            ("digitlab --help", [exe, "--help"]),
            ("digitlab predict one.png", predict),
        ):
            wall, peak, out = measure(cmd, args.runs)
            print(f"{name:26s} wall {wall:.2f} s (median of {args.runs}), peak {peak:.0f} MB")
        print(f"  output: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
