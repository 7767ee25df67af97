"""The corrections store behind the web API under concurrent writers and damage (issue 27).

Paging the corrections while another client stores them (before: offsets counted from the
newest, so 612 of 1,231 items came twice), and exporting a store whose pages are damaged
(before: 200 and no bytes, then a cut connection and two tracebacks in the log).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import pytest

from servers import local_client

PNG = b"\x89PNG not really"  # the store keeps the bytes it is given


@pytest.fixture
def app(tmp_path):
    from digitlab.web.app import create_app

    return create_app(db_path=tmp_path / "c.sqlite3", learn=False)


def store_of(app):
    return app.state.service.store


def add(store, label: int = 1, drawing: dict | None = None) -> int:
    return store.add(label=label, image_png=PNG, predicted=7, confidence=0.5,
                     model_sha256="x", drawing=drawing).id  # fmt: skip


def test_pages_by_id_neither_repeat_nor_skip_while_others_store(app) -> None:
    store, client = store_of(app), local_client(app)
    existing = {add(store, i % 10) for i in range(60)}
    stop, written = threading.Event(), []

    def writer() -> None:
        while not stop.is_set():
            written.append(add(store))
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen: list[int] = []
        params: dict = {"limit": 4}
        while True:
            r = client.get("/api/corrections", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            assert page["next_offset"] is None or "before_id" not in params
            seen += [c["id"] for c in page["items"]]
            if page["next_before_id"] is None:
                break
            params = {"limit": 4, "before_id": page["next_before_id"]}
            time.sleep(0.005)  # let the writer store between pages
    finally:
        stop.set()
        thread.join()
    assert len(written) > 4  # corrections were stored while paging
    assert len(seen) == len(set(seen)), "a correction came twice"
    assert existing <= set(seen), "a correction stored before paging began was missed"
    assert seen == sorted(seen, reverse=True)  # newest first


def test_offset_pages_still_work_and_the_two_ways_do_not_mix(app) -> None:
    store, client = store_of(app), local_client(app)
    ids = [add(store) for _ in range(5)]
    first = client.get("/api/corrections", params={"limit": 2}).json()
    assert [c["id"] for c in first["items"]] == ids[:-3:-1]
    assert (first["next_offset"], first["next_before_id"]) == (2, ids[-2])
    last = client.get("/api/corrections", params={"limit": 2, "offset": 4}).json()
    assert [c["id"] for c in last["items"]] == [ids[0]]
    assert (last["next_offset"], last["next_before_id"]) == (None, None)
    by_id = client.get("/api/corrections", params={"limit": 10, "before_id": ids[2]}).json()
    assert [c["id"] for c in by_id["items"]] == [ids[1], ids[0]] and by_id["total"] == 5
    both = client.get("/api/corrections", params={"offset": 1, "before_id": ids[2]})
    assert both.status_code == 422 and "not both" in both.json()["error"]
    for bad in ("0", "x", str(2**63)):
        assert client.get(f"/api/corrections?before_id={bad}").status_code == 422


def damage_overflow_pages(path) -> int:
    """Overwrite the pages that hold the ends of long drawings (overflow pages) with junk:
    the table's own pages stay whole, so counting the rows still works and only reading
    them fails. Returns how many pages were damaged."""
    with sqlite3.connect(path) as con:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        query = "SELECT pageno FROM dbstat WHERE name = 'corrections' AND pagetype = 'overflow'"
        pages = [n for (n,) in con.execute(query)]
    con.close()
    with open(path, "r+b") as f:
        for n in pages:
            f.seek((n - 1) * page_size)
            f.write(b"\xff" * page_size)
    return len(pages)


def test_exporting_a_damaged_store_is_503_json_and_no_traceback(app, caplog) -> None:
    store, client = store_of(app), local_client(app)
    long = {"strokes": [[[i % 280, i % 280] for i in range(3000)]], "width": 280, "height": 280}
    for _ in range(6):
        add(store, drawing=long)
    assert client.get("/api/corrections/export").status_code == 200
    assert damage_overflow_pages(store.path) > 0
    assert store.count() == 6  # what the export looked at before: it still works
    with caplog.at_level(logging.INFO):
        r = client.get("/api/corrections/export")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert "damaged" in r.json()["error"] and r.headers["retry-after"]
    ours = [rec for rec in caplog.records if rec.name.startswith("digitlab")]
    assert not [rec for rec in ours if rec.exc_info], "a traceback in the log"
    assert [rec.levelname for rec in ours] == ["ERROR"] and "\n" not in ours[0].getMessage()


def test_a_store_failing_part_way_through_an_export_ends_it_with_an_error_line(
    app, caplog, monkeypatch
) -> None:
    from digitlab.corrections import CorrectionStore, StoreUnavailable

    store, client = store_of(app), local_client(app)
    for _ in range(3):
        add(store)
    whole = CorrectionStore.__iter__

    def fails_after_one(self):
        rows = whole(self)
        yield next(rows)
        raise StoreUnavailable("the corrections store cannot be used just now (damaged)")

    monkeypatch.setattr(CorrectionStore, "__iter__", fails_after_one)
    with caplog.at_level(logging.INFO):
        r = client.get("/api/corrections/export")
    lines = r.text.splitlines()
    assert r.status_code == 200 and len(lines) == 2
    assert "cannot be used" in json.loads(lines[-1])["error"]
    assert not [rec for rec in caplog.records if rec.exc_info]
