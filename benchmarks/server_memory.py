"""Server memory under hostile uploads: peak RSS of a real `digitlab serve` child process.

Four clients at once upload, in turn: a 16-bit 7000 x 7000 PNG (95 KB on disk, 93 MiB
decoded: refused before decoding), an RGBA 4096 x 4096 PNG (64 KB on disk, 64 MiB decoded,
the largest accepted), and an 8-bit 7000 x 7000 PNG. The peak resident size (VmHWM from
/proc) is read after each round, beside the idle server's (the baseline, same process).

    python benchmarks/server_memory.py [--clients 4] [--json] [--no-learn]

Goal: peak at most 400 MB. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

GOAL_MB = 400
UPLOADS = (("16-bit 7000x7000", "I;16", 7000), ("RGBA 4096x4096", "RGBA", 4096),
           ("8-bit 7000x7000", "L", 7000))  # fmt: skip


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(mode: str, side: int) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side)).save(buf, "PNG")
    return buf.getvalue()


def start_server(port: int, db: Path, learn: bool = True) -> subprocess.Popen:
    # No decode budget: the benchmark's own large uploads would otherwise meet its 429.
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--db", str(db),
           "--learn" if learn else "--no-learn", "--decode-budget", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            # Ready when its personal model has loaded the MNIST reference (or cannot): the
            # idle figure then includes what learning from corrections keeps in memory.
            state = httpx.get(f"http://127.0.0.1:{port}/api/learning", timeout=1).json()
            if state["ready"] or state["problem"]:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def upload_round(url: str, data: bytes, clients: int) -> list[int]:
    codes: list[int] = []

    def send() -> None:
        r = httpx.post(url, content=data, headers={"content-type": "image/png"}, timeout=120)
        codes.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(codes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-learn", action="store_true", help="serve without live learning")
    args = ap.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(port, Path(tmp) / "corrections.sqlite3", not args.no_learn)
        try:
            result = {"clients": args.clients, "idle_mb": round(peak_mb(proc.pid), 1), "rounds": []}
            for name, mode, side in UPLOADS:
                data = png(mode, side)
                codes = upload_round(f"http://127.0.0.1:{port}/api/predict", data, args.clients)
                result["rounds"].append({"upload": name, "bytes": len(data), "codes": codes,
                                         "peak_mb": round(peak_mb(proc.pid), 1)})  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result["peak_mb"] = max(r["peak_mb"] for r in result["rounds"])
    result["goal_mb"] = GOAL_MB
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"idle server: {result['idle_mb']} MB peak RSS")
        for r in result["rounds"]:
            print(f"{args.clients} x {r['upload']} ({r['bytes']:,} bytes): answers {r['codes']}, "
                  f"peak so far {r['peak_mb']} MB")  # fmt: skip
        verdict = "met" if result["peak_mb"] <= GOAL_MB else "MISSED"
        print(f"peak {result['peak_mb']} MB; goal at most {GOAL_MB} MB: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
