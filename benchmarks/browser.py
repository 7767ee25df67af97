"""Browser benchmark: the model in the page against the server round trip, in one run.

A digitlab server (uvicorn, in a thread, 127.0.0.1) with onnxruntime-web, and Debian's
headless Chromium (Playwright) on its page. MNIST test digits redrawn as strokes
(benchmarks/drawn_digits.py) are read three ways, timed in the page (performance.now):

  - preprocessing only: static/preprocess.js, the port of the stroke path;
  - in the browser: preprocessing + the model (onnxruntime-web, WebAssembly, one thread),
    what the page does for each live prediction (goal: p50 under 5 ms);
  - on the server: POST /api/predict from the page, answer parsed (the round trip).

And 4-digit numbers written as people write them (benchmarks/number_strings.py's ``hand``
set, some digits touching) read whole, end to end: in the page by read.js and the model
(``window.digitlab.read``, what the page does as a number is written; goal: p50 under
10 ms), and by the server's Reader (the round trip).

Then, in a fresh browser context (empty cache): how long after navigation the model is
ready and the first prediction is shown, against the first server answer; and the page
weight, what the page downloads for the runtime and the model (gzipped, and as files).

    python benchmarks/browser.py [--drawings 300] [--model PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # drawn_digits; chromium

import chromium  # noqa: E402  (tests/chromium.py: Debian's Chromium, launched as the tests do)
from digitlab.browser import find_runtime  # noqa: E402
from digitlab.data import load_mnist  # noqa: E402
from digitlab.predict import Predictor  # noqa: E402
from digitlab.web.app import create_app  # noqa: E402
from drawn_digits import draw  # noqa: E402
from number_strings import numbers  # noqa: E402

WARMUP = 20

# Timed in the page, drawing by drawing, one way after the other (so that no way runs while
# another finishes): preprocessing alone, preprocessing + model, the server round trip.
TIMED = """async ([drawings, warmup, names]) => {
  const { preprocessStrokes } = await import("./static/preprocess.js");
  const settings = await (await fetch("api/browser")).json();
  const ways = {
    pre: async (d) => preprocessStrokes(d, settings.preprocessing),
    here: (d) => window.digitlab.infer(d),
    read: (d) => window.digitlab.read(d),
    server: async (d) => {
      const r = await fetch("api/predict", { method: "POST", body: JSON.stringify(d),
        headers: { "Content-Type": "application/json" } });
      return r.json();
    },
  };
  const out = {};
  for (const name of names) {
    const way = ways[name];
    for (const d of drawings.slice(0, warmup)) await way(d);  // warm up the JIT, the server
    out[name] = [];
    for (const d of drawings) {
      const t = performance.now();
      await way(d);
      out[name].push(performance.now() - t);
    }
  }
  return out;
}"""

# In a fresh page: when it is ready to predict, when the first prediction is made, the weight.
FIRST = """async (d) => {
  const where = (await window.digitlab.ready).where;
  const ready = performance.now();
  let ms = performance.now();
  if (where === "browser") {
    ms = (await window.digitlab.infer(d)).ms;
  } else {
    const r = await fetch("api/predict", { method: "POST", body: JSON.stringify(d),
      headers: { "Content-Type": "application/json" } });
    await r.json();
    ms = performance.now() - ms;
  }
  const files = performance.getEntriesByType("resource").map((e) => ({
    url: e.name, transfer: e.transferSize, decoded: e.decodedBodySize,
  }));
  return { where, ready, first: performance.now(), ms, files };
}"""


def first_prediction(browser, url: str, drawing: dict) -> dict:
    """A fresh browser context (nothing cached) on ``url``: FIRST's figures, ms after navigation."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(url + "/")
    out = page.evaluate(FIRST, drawing)
    context.close()
    return out


@contextmanager
def background_server(app) -> Iterator[str]:
    """uvicorn on a free port of 127.0.0.1 in a thread, bound as `digitlab serve` binds; its URL.

    (Not tests/servers.py's: its socket is made without IPPROTO_TCP, so asyncio leaves Nagle's
    algorithm on and every answer waits ~40 ms for a delayed ACK, which `digitlab serve` does not.)
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drawings", type=int, default=300, help="test digits to draw")
    ap.add_argument("--model", default=None, help="model file [default: the bundled model]")
    ap.add_argument("--numbers", type=int, default=100, help="4-digit numbers to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)

    runtime = find_runtime()
    if runtime is None:
        print("onnxruntime-web is not installed: run `make install` (npm ci)", file=sys.stderr)
        return 2
    images, _ = load_mnist("test")
    rng = np.random.default_rng(args.seed)
    drawings = [draw(images[i], rng).strokes.to_json() for i in range(args.drawings)]
    written = numbers("hand", 8 * args.numbers, args.seed)  # a quarter of them have 4 digits
    fours = [it.x.to_json() for it in written if len(it.text) == 4][: args.numbers]
    predictor = Predictor(args.model)
    db = Path(tempfile.mkdtemp(prefix="digitlab-bench-")) / "corrections.sqlite3"
    app = create_app(predictor, db, runtime_dir=runtime)

    from playwright.sync_api import sync_playwright

    server_only = create_app(predictor, db)  # the same model, no runtime: the page uses the API
    with (
        background_server(app) as url,
        background_server(server_only) as server_url,
        sync_playwright() as p,
    ):
        browser = chromium.launch(p)
        for name in ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"):
            httpx.get(f"{url}/runtime/{name}")  # the server gzips each file once: not timed
        first = first_prediction(browser, url, drawings[0])
        first_server = first_prediction(browser, server_url, drawings[0])
        assert (first["where"], first_server["where"]) == ("browser", "server")

        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        assert page.evaluate("window.digitlab.ready")["where"] == "browser"
        timed = page.evaluate(TIMED, [drawings, WARMUP, ["pre", "here", "server"]])
        timed_numbers = page.evaluate(TIMED, [fours, WARMUP, ["read", "server"]])
        context.close()
        browser.close()
    shutil.rmtree(db.parent, ignore_errors=True)

    files = {f["url"].split("/")[-1].split("?")[0]: f for f in first["files"]}
    weight = {
        name: {"transferred": files[name]["transfer"], "file": files[name]["decoded"]}
        for name in ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm", "model.onnx")
    }
    report = {
        "model": str(predictor.model.path),
        "drawings": len(drawings),
        "ms_per_drawing": {
            "preprocessing_in_browser": percentiles(timed["pre"]),
            "in_browser_preprocessing_and_model": percentiles(timed["here"]),
            "server_round_trip": percentiles(timed["server"]),
        },
        "numbers": len(fours),
        "ms_per_4_digit_number": {
            "in_browser_read": percentiles(timed_numbers["read"]),
            "server_round_trip": percentiles(timed_numbers["server"]),
        },
        "first_prediction_after_navigation_ms": {
            "in_browser": {k: first[k] for k in ("ready", "first", "ms")},
            "on_the_server": {k: first_server[k] for k in ("ready", "first", "ms")},
        },
        "page_weight_bytes": {
            **weight,
            "runtime_and_model": {
                k: sum(w[k] for w in weight.values()) for k in ("transferred", "file")
            },
            "whole_page_transferred": sum(f["transfer"] for f in first["files"]),
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    ms = report["ms_per_drawing"]
    print(f"model: {report['model']}; {len(drawings)} drawn MNIST test digits (seed {args.seed})")
    print("per drawing, timed in the page (headless Chromium):")
    for key, label in (
        ("preprocessing_in_browser", "preprocessing (preprocess.js)"),
        ("in_browser_preprocessing_and_model", "in the browser: preprocess + model"),
        ("server_round_trip", "on the server: POST /api/predict"),
    ):
        print(f"  {label:35s} p50 {ms[key]['p50']:6.2f} ms, p99 {ms[key]['p99']:6.2f} ms")
    goal = "met" if ms["in_browser_preprocessing_and_model"]["p50"] < 5 else "MISSED"
    print(f"  goal: in the browser p50 < 5 ms: {goal}")
    num = report["ms_per_4_digit_number"]
    print(f"per 4-digit number written by hand ({report['numbers']}), read whole:")
    for key, label in (
        ("in_browser_read", "in the browser: read.js + model"),
        ("server_round_trip", "on the server: POST /api/predict"),
    ):
        print(f"  {label:35s} p50 {num[key]['p50']:6.2f} ms, p99 {num[key]['p99']:6.2f} ms")
    goal = "met" if num["in_browser_read"]["p50"] <= 10 else "MISSED"
    print(f"  goal: in the browser p50 <= 10 ms: {goal}")
    nav = report["first_prediction_after_navigation_ms"]
    print("first prediction after navigation, fresh browser context (nothing cached):")
    for key, label in (("in_browser", "in the browser"), ("on_the_server", "on the server ")):
        f = nav[key]
        print(f"  {label}: ready {f['ready']:6.0f} ms, answer {f['first']:6.0f} ms "
              f"(the prediction itself {f['ms']:.1f} ms)")  # fmt: skip
    w = report["page_weight_bytes"]
    print("page weight (runtime + model), transferred / as files:")
    for name in ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm", "model.onnx"):
        sent, file = w[name]["transferred"] / 1e6, w[name]["file"] / 1e6
        print(f"  {name:28s} {sent:6.2f} MB / {file:6.2f} MB")
    both = w["runtime_and_model"]
    print(f"  {'together':28s} {both['transferred'] / 1e6:6.2f} MB / {both['file'] / 1e6:6.2f} MB"
          f"; the whole page: {w['whole_page_transferred'] / 1e6:.2f} MB transferred")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
