"""Live learning's cost: one correction's refit as the personal model grows, and what
learning does to the readings other clients wait for.

  refit    a `PersonalModel` of the bundled model learns MNIST training digits outside the
           shipped reference, one correction at a time (``AdaptConfig(max_per_class=100)``,
           so that it can hold 1,000); the seconds of each `PersonalModel.add` (embedding
           the drawing and its 8 variants, the guard, the calibration, the card, in the
           refit child as the server runs it, and the new state sent back) over the
           ``--window`` corrections before it holds 50, 200 and 1,000 examples.
  serve    a real HTTP server (uvicorn, the app of `digitlab serve`, learning on, the
           corrections rate limit lifted so that one client can stream) in a child
           process: ``--requests`` sequential ``POST /api/predict`` of a drawing idle,
           and as many while another client, a process of its own, streams
           ``POST /api/corrections`` (MNIST digits as pixel grids) back to back, the
           phases taking turns in four rounds; p50 and p99 of each (its rounds pooled),
           measured by this process against the same server in the same run;
           and, as controls, while the same client streams corrections the server only
           stores (``"learn": false``), and while it streams them to a second server
           (the machine as busy, none of it on the timed server).
  beside   no HTTP, no other client: ``--requests`` readings of the drawing in this
           process, idle, then while refits run back to back beside them, on a thread of
           this process (as the server ran them before) and in a `RefitProcess` child (as
           it runs them now): what a refit itself costs the readings.

Goals (issue 27): a refit <= 0.2 s at 1,000 learnt examples; ``/api/predict`` p99 while
learning <= 2 x idle. Needs the MNIST files ($DIGITLAB_DATA) for the digits it learns.

    python benchmarks/learning.py [--window 20] [--requests 1000] [--skip-refit] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
SIZES = (50, 200, 1000)
DRAWING = {"strokes": [[[90, 50], [200, 50], [120, 240]]], "width": 280, "height": 280, "pen": 18}


def corrections(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST training digits (uint8) outside the shipped reference, with their labels."""
    from digitlab.data import load_mnist
    from digitlab.reference import load_shipped, reference_indices

    images, labels = load_mnist("train")
    used = np.concatenate(list(reference_indices(*load_shipped().split).values()))
    pool = np.setdiff1d(np.arange(len(labels)), used)
    picks = np.random.default_rng(seed).choice(pool, n, replace=False)
    return images[picks], labels[picks].astype(int)


# --------------------------------------------------------------------------- #
# The refit
# --------------------------------------------------------------------------- #


def refit_costs(window: int, cache: Path) -> dict[int, dict[str, float]]:
    """Seconds a correction over the ``window`` corrections before each of `SIZES`."""
    from digitlab.adapt import AdaptConfig, AdaptError, PersonalModel

    personal = PersonalModel(config=AdaptConfig(max_per_class=100), cache_dir=cache, process=True)
    personal.prepare()  # the reference, once: not a correction's cost
    images, labels = corrections(2 * max(SIZES))
    seconds, held, out = [], 0, {}
    for x, y in zip(images, labels, strict=True):
        start = time.perf_counter()
        try:
            personal.add(x.astype(np.float32) / 255, int(y), "benchmark")
        except AdaptError:
            held += 1
        seconds.append(time.perf_counter() - start)
        n = personal.n_examples
        if n in SIZES and n not in out:
            last = np.array(seconds[-window:])
            out[n] = {"mean_s": float(last.mean()), "p90_s": float(np.quantile(last, 0.9)),
                      "max_s": float(last.max()), "corrections": len(seconds),
                      "held": held}  # fmt: skip
        if len(out) == len(SIZES):
            break
    return out


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


def serve(port: int, db: str, thread_refits: bool = False) -> None:
    """The child: the app of `digitlab serve`, learning on, the corrections limit lifted;
    with ``thread_refits`` its refits on a thread of the server, as before round 14."""
    import uvicorn

    if thread_refits:
        from digitlab import adapt

        class OnAThread(adapt.PersonalModel):
            def __init__(self, *args: object, process: bool = False, **kwargs: object) -> None:
                super().__init__(*args, process=False, **kwargs)  # type: ignore[misc, arg-type]

        adapt.PersonalModel = OnAThread  # type: ignore[misc]

    from digitlab.web.app import create_app
    from digitlab.web.service import RateLimit

    app = create_app(db_path=db)
    app.state.service.correcting = RateLimit(per_minute=1e9, burst=10**9)
    uvicorn.run(app, host=HOST, port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def post(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def latencies(port: int, n: int) -> np.ndarray:
    """Seconds of ``n`` sequential predictions on one keep-alive connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        status, _ = post(conn, "/api/predict", DRAWING)
        out.append(time.perf_counter() - start)
        assert status == 200, status
    conn.close()
    return np.array(out)


def stream(port: int, data: str, learn: bool, first: int = 0) -> None:
    """The streaming client, a process of its own (``--stream``): corrections sent back to
    back until SIGTERM (``learn`` False: the server stores them only, the control that tells
    learning from request load), then its counts as JSON on stdout. In a process of its own,
    not a thread beside the measuring client, so that its interpreter lock does not delay
    the timed requests: the figures measure the server."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with np.load(data) as f:
        images, labels = f["images"], f["labels"]
    counts = {"sent": 0, "learned": 0, "held": 0}
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    while not stop.is_set():
        i = (first + counts["sent"]) % len(labels)
        grid = {"pixels": images[i].tolist(), "label": int(labels[i])}
        if not learn:
            grid["learn"] = False
        status, body = post(conn, "/api/corrections", grid)
        assert status == 201, (status, body)
        if not counts["sent"]:
            print("streaming", flush=True)
        counts["sent"] += 1
        counts["learned"] += bool(body["learned"])
        counts["held"] += str(body.get("not_learned_because") or "").startswith("held back")
    conn.close()
    print(json.dumps(counts), flush=True)


class Streamer:
    """`stream` in a child process, from `start` to `finish` (which returns its counts)."""

    def __init__(self, port: int, data: Path, learn: bool, first: int = 0) -> None:
        self.args = [sys.executable, __file__, "--stream", str(port), str(data), str(int(learn)),
                     str(first)]  # fmt: skip

    def start(self) -> None:
        self.child = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.child.stdout is not None
        if self.child.stdout.readline().strip() != "streaming":  # its first one answered
            raise SystemExit("the streaming client failed")

    def finish(self) -> dict[str, int]:
        self.child.send_signal(signal.SIGTERM)
        out, _ = self.child.communicate(timeout=120)
        if self.child.returncode:
            raise SystemExit("the streaming client failed")
        return json.loads(out.strip().splitlines()[-1])


def wait_ready(port: int, child: subprocess.Popen) -> None:
    for _ in range(600):
        if child.poll() is not None:
            raise SystemExit("the server exited")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


@contextlib.contextmanager
def running_server(folder: Path, thread_refits: bool = False) -> Iterator[int]:
    """`serve` in a child process with its own store and cache in ``folder``: its port."""
    port = free_port()
    folder.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(folder / "cache")}
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                              str(folder / "c.sqlite3"), str(int(thread_refits))],
                             env=env)  # fmt: skip
    try:
        wait_ready(port, child)
        yield port
    finally:
        child.terminate()
        child.wait(timeout=30)


def post_once(port: int, path: str, body: dict) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    post(conn, path, body)
    conn.close()


def streamed(port: int, to: int, data: Path, learn: bool, requests: int,
             first: int = 0) -> tuple[np.ndarray, dict[str, int]]:  # fmt: skip
    """`latencies` of the server on ``port`` while a `Streamer` sends corrections to ``to``,
    from the ``first``-th."""
    streamer = Streamer(to, data, learn, first)
    streamer.start()
    time.sleep(1.0)  # under way
    timed = latencies(port, requests)
    return timed, streamer.finish()


def server_latencies(requests: int, rounds: int = 4,
                     thread_refits: bool = False) -> dict[str, float]:  # fmt: skip
    """p50/p99 of /api/predict idle and while another client streams corrections; as
    controls, while that client streams corrections the server only stores, and while it
    streams them to a second server (the machine as busy, the timed server not: what that
    costs the readings is the machine's share, not the server's). Idle, storing and
    learning take turns, ``rounds`` times ``requests / rounds`` each, so that what else the
    machine does meanwhile weighs on each alike; each phase's samples are pooled."""
    images, labels = corrections(600, seed=1)
    grid = {"pixels": images[-1].tolist(), "label": int(labels[-1])}
    block = max(1, requests // rounds)
    with (tempfile.TemporaryDirectory() as tmp,
          running_server(Path(tmp) / "timed", thread_refits) as port):  # fmt: skip
        post_once(port, "/api/corrections", grid)  # loads the reference: not timed
        latencies(port, 50)  # warm the connection and the runtime
        data = Path(tmp) / "corrections.npz"
        np.savez(data, images=images, labels=labels)
        timed: dict[str, list] = {"idle": [], "storing": [], "learning": []}
        counts: dict[str, dict[str, int]] = {}
        for r in range(rounds):
            timed["idle"].append(latencies(port, block))
            for name, learn in (("storing", False), ("learning", True)):
                x, sent = streamed(port, port, data, learn, block, r * len(labels) // rounds)
                timed[name].append(x)
                counts[name] = {k: counts.get(name, {}).get(k, 0) + v for k, v in sent.items()}
        phases = {name: np.concatenate(x) for name, x in timed.items()}
        with running_server(Path(tmp) / "other", thread_refits) as other:  # started last
            post_once(other, "/api/corrections", grid)
            phases["elsewhere"], counts["elsewhere"] = streamed(port, other, data, True, requests)
    ms = {f"{name}_{q}_ms": 1000 * float(np.quantile(x, p))
          for name, x in phases.items() for q, p in (("p50", 0.5), ("p99", 0.99))}  # fmt: skip
    learning = counts["learning"]
    return {**ms, "p99_ratio": ms["learning_p99_ms"] / ms["idle_p99_ms"],
            "storing_p99_ratio": ms["storing_p99_ms"] / ms["idle_p99_ms"],
            "elsewhere_p99_ratio": ms["elsewhere_p99_ms"] / ms["idle_p99_ms"],
            "corrections_stored_only": counts["storing"]["sent"],
            "corrections_elsewhere": counts["elsewhere"]["sent"],
            "corrections_sent": learning["sent"], "corrections_learned": learning["learned"],
            "corrections_held_back": learning["held"]}  # fmt: skip


# --------------------------------------------------------------------------- #
# Beside the readings: a refit on a thread of the reading process, or in its child
# --------------------------------------------------------------------------- #


def beside_latencies(requests: int, cache: Path) -> dict[str, float]:
    """p50/p99 of reading the drawing in this process, one after another, idle and while
    refits run back to back beside them: on a thread of this process (at the learner's
    nice, as the server ran them before) and in a `RefitProcess` child (as it runs them
    now). No HTTP and no other client: what a refit itself costs the readings."""
    from digitlab.adapt import AdaptConfig, AdaptError, PersonalModel, lower_priority
    from digitlab.inputs import Digit, parse
    from digitlab.predict import Predictor
    from digitlab.read import Reader

    images, labels = corrections(400, seed=2)

    def timed(personal: PersonalModel, n: int = requests) -> np.ndarray:
        reader = Reader(Predictor().using(personal))
        digit = parse(Digit, DRAWING, reader.predictor.config).digit()
        out = []
        for _ in range(n):
            start = time.perf_counter()
            reader.read(digit)
            out.append(time.perf_counter() - start)
            time.sleep(0.002)  # a client's turn between two requests
        return np.array(out)

    def refits(personal: PersonalModel, stop: threading.Event) -> None:
        lower_priority()
        for x, y in zip(images, labels, strict=True):
            if stop.is_set():
                return
            with contextlib.suppress(AdaptError):
                personal.add(x.astype(np.float32) / 255, int(y), "benchmark")

    phases = {}
    for name, process in (("thread", False), ("child", True)):
        config = AdaptConfig(max_per_class=100)
        personal = PersonalModel(config=config, cache_dir=cache, process=process)
        personal.prepare()
        timed(personal, 50)  # warm
        if name == "thread":
            phases["idle"] = timed(personal)
        stop = threading.Event()
        worker = threading.Thread(target=refits, args=(personal, stop))
        worker.start()
        time.sleep(1.0)  # under way
        phases[name] = timed(personal)
        stop.set()
        worker.join()
        personal.close()
    ms = {f"beside_{name}_{q}_ms": 1000 * float(np.quantile(x, p))
          for name, x in phases.items() for q, p in (("p50", 0.5), ("p99", 0.99))}  # fmt: skip
    return {**ms, **{f"beside_{name}_p99_ratio": ms[f"beside_{name}_p99_ms"]
                     / ms["beside_idle_p99_ms"] for name in ("thread", "child")}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=20,
                    help="corrections timed before each size")  # fmt: skip
    ap.add_argument("--requests", type=int, default=1000, help="predictions timed, each phase")
    ap.add_argument("--skip-refit", action="store_true", help="only the server part")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument(
        "--thread-refits",
        action="store_true",
        help="the servers refit on a thread of their own process (as before)",
    )
    ap.add_argument("--serve", nargs=3, metavar=("PORT", "DB", "THREAD"), help=argparse.SUPPRESS)
    ap.add_argument("--stream", nargs=4, metavar=("PORT", "DATA", "LEARN", "FIRST"),
                    help=argparse.SUPPRESS)  # fmt: skip
    args = ap.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], bool(int(args.serve[2])))
        return 0
    if args.stream:
        stream(int(args.stream[0]), args.stream[1], bool(int(args.stream[2])), int(args.stream[3]))
        return 0
    results: dict = {}
    if not args.skip_refit:
        with tempfile.TemporaryDirectory() as tmp:
            results["refit"] = refit_costs(args.window, Path(tmp))
        for n, r in results["refit"].items():
            print(f"refit at {n:>5} learnt examples: {r['mean_s']:.3f} s a correction "
                  f"(p90 {r['p90_s']:.3f}, max {r['max_s']:.3f}; "
                  f"the last {args.window})")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        b = results["beside"] = beside_latencies(args.requests, Path(tmp))
    print(f"reading beside refits, in one process: idle p50 {b['beside_idle_p50_ms']:.1f} ms, "
          f"p99 {b['beside_idle_p99_ms']:.1f} ms; refits on a thread: p50 "
          f"{b['beside_thread_p50_ms']:.1f} ms, p99 {b['beside_thread_p99_ms']:.1f} ms "
          f"(x {b['beside_thread_p99_ratio']:.2f}); refits in the child: p50 "
          f"{b['beside_child_p50_ms']:.1f} ms, p99 {b['beside_child_p99_ms']:.1f} ms "
          f"(x {b['beside_child_p99_ratio']:.2f})")  # fmt: skip
    s = results["serve"] = server_latencies(args.requests, thread_refits=args.thread_refits)
    print(f"/api/predict idle: p50 {s['idle_p50_ms']:.1f} ms, p99 {s['idle_p99_ms']:.1f} ms; "
          f"while another client streams corrections: p50 {s['learning_p50_ms']:.1f} ms, "
          f"p99 {s['learning_p99_ms']:.1f} ms (x {s['p99_ratio']:.2f}); "
          f"{s['corrections_sent']} corrections sent, "
          f"{s['corrections_learned']} learnt; control, the same client storing only "
          f"(learn: false): p50 {s['storing_p50_ms']:.1f} ms, p99 {s['storing_p99_ms']:.1f} ms "
          f"(x {s['storing_p99_ratio']:.2f}), {s['corrections_stored_only']} stored; "
          f"control, the same client learning on a second server: p50 "
          f"{s['elsewhere_p50_ms']:.1f} ms, p99 {s['elsewhere_p99_ms']:.1f} ms "
          f"(x {s['elsewhere_p99_ratio']:.2f}), {s['corrections_elsewhere']} sent")  # fmt: skip
    at_1000 = results.get("refit", {}).get(1000, {}).get("mean_s", 0.0)
    goals = [("refit <= 0.2 s at 1,000 learnt examples", at_1000 <= 0.2),
             ("/api/predict p99 while learning <= 2 x idle", s["p99_ratio"] <= 2)]  # fmt: skip
    for goal, ok in goals:
        print(f"goal: {goal}: {'met' if ok else 'MISSED'}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
