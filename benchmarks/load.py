"""Load benchmark of the web app: concurrent clients on 127.0.0.1 against `digitlab serve`.

Starts ``python -m digitlab serve`` (the bundled model unless --model, a throwaway
corrections database) on a free loopback port, exactly as a user runs it, then
runs ``--clients`` clients, each on its own keep-alive connection sending
requests back to back for ``--seconds``:

  baseline  GET /healthz: the HTTP stack alone (uvicorn + FastAPI), no model
  predict   POST /api/predict with a drawing: the strokes JSON the page sends
            for a hand-drawn 3 (120 points)

and prints throughput, p50/p99 latency and errors for each, and the ratio of
the two throughputs. Goal: at least 200 predictions/s with zero errors. The
clients are a minimal asyncio HTTP/1.1 client in this process, so they take
little of the CPU the server needs. Only loopback traffic.

    python benchmarks/load.py [--clients 8] [--seconds 10] [--model PATH] [--json]

Exit status 1 if any request failed (the throughput goal is reported, not enforced:
timings on a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GOAL_RPS = 200.0
HOST = "127.0.0.1"


def drawing_of_a_3() -> dict:
    """A 3 as the page sends it: 280 x 280 canvas coordinates, one stroke, pen 18."""
    pts = []
    for i in range(60):  # upper arc, then lower arc, as a hand draws it
        a = math.radians(-160 + 250 * i / 59)
        pts.append([round(140 + 45 * math.cos(a), 1), round(90 + 42 * math.sin(a), 1)])
    for i in range(60):
        a = math.radians(-90 + 250 * i / 59)
        pts.append([round(140 + 53 * math.cos(a), 1), round(180 + 53 * math.sin(a), 1)])
    return {"strokes": [pts], "width": 280, "height": 280, "pen": 18}


def http_request(method: str, path: str, body: bytes = b"", ctype: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return (head + "\r\n").encode() + body


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(port: int, db: Path, model: str | None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "digitlab",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--db",
        str(db),
        *(["--model", model] if model else []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}: {' '.join(cmd)}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the server did not start within 60 s")


# --------------------------------------------------------------------------- #
# The clients
# --------------------------------------------------------------------------- #


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    first_body: bytes | None = None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    length = next(
        int(h.split(":", 1)[1]) for h in head[1:] if h.lower().startswith("content-length:")
    )
    return status, await reader.readexactly(length)


async def client(port: int, request: bytes, until: float, run: Run) -> None:
    """One connection, one request at a time, until the deadline."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as e:
        run.errors += 1
        run.problems.append(f"connect: {e}")
        return
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            status, body = await read_response(reader)
            run.latencies.append(time.perf_counter() - start)
            if status != 200:
                run.errors += 1
                run.problems.append(f"HTTP {status}: {body[:200]!r}")
            if run.first_body is None:
                run.first_body = body
    except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as e:
        run.errors += 1
        run.problems.append(repr(e))
    finally:
        writer.close()


async def load(port: int, request: bytes, clients: int, seconds: float) -> tuple[Run, float]:
    run = Run()
    start = time.perf_counter()
    await asyncio.gather(*(client(port, request, start + seconds, run) for _ in range(clients)))
    return run, time.perf_counter() - start


def measure(port: int, request: bytes, clients: int, seconds: float) -> dict:
    asyncio.run(load(port, request, clients, min(1.0, seconds)))  # warm-up, not counted
    run, elapsed = asyncio.run(load(port, request, clients, seconds))
    ms = np.asarray(run.latencies) * 1000
    return {
        "requests": len(run.latencies),
        "rps": len(run.latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else math.nan,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else math.nan,
        "errors": run.errors,
        "problems": run.problems[:5],
        "first_body": run.first_body,
    }


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent connections (default 8)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10)")
    ap.add_argument("--model", help="model file (default: the bundled model)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    body = json.dumps(drawing_of_a_3()).encode()
    requests = {
        "GET /healthz (baseline)": http_request("GET", "/healthz"),
        "POST /api/predict (drawing)": http_request(
            "POST", "/api/predict", body, "application/json"
        ),
    }
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(port, Path(tmp) / "corrections.sqlite3", args.model)
        try:
            results = {
                name: measure(port, req, args.clients, args.seconds)
                for name, req in requests.items()
            }
        finally:
            server.terminate()
            server.wait(timeout=10)

    base, pred = results.values()
    digit = json.loads(pred["first_body"])["digit"] if pred["first_body"] else None
    met = pred["rps"] >= GOAL_RPS and pred["errors"] == 0
    for r in results.values():
        del r["first_body"]
    summary = {
        "clients": args.clients,
        "seconds": args.seconds,
        "cores": os.cpu_count(),
        "results": results,
        "predict_over_baseline": pred["rps"] / base["rps"],
        "predicted_digit": digit,
        "goal_rps": GOAL_RPS,
        "goal_met": met,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"load: {args.clients} clients x {args.seconds:g} s on {HOST}, "
            f"`digitlab serve` (1 uvicorn worker), {os.cpu_count()} cores"
        )
        print(f"{'':30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'requests':>9}")
        for name, r in results.items():
            print(
                f"{name:30} {r['rps']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                f"{r['errors']:7d} {r['requests']:9d}"
            )
            for p in r["problems"]:
                print(f"    {p}")
        print(
            f"predict / baseline throughput: {summary['predict_over_baseline']:.2f} x; "
            f"the drawing was read as {digit}"
        )
        print(f"goal: >= {GOAL_RPS:.0f} predictions/s with 0 errors: {'met' if met else 'NOT met'}")
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
