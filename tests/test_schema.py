"""The served OpenAPI schema and the server agree: bodies made FROM GET /openapi.json.

For every JSON request body the API documents, bodies are generated from the served
schema itself (`from_schema`, below: the keywords the schema uses, and a failure on any
other, so that a new keyword is taught rather than ignored), and some are then damaged (a
wrong type somewhere, a required field dropped, a field added, a number out of range, too
many items). A JSON Schema validator (jsonschema, draft 2020-12 as OpenAPI 3.1 uses)
judges each body against that same schema, and the server must agree:

- a body the schema allows is accepted (200, or 201 for a correction), unless it breaks a
  rule the schema can only state in words (its descriptions): a grid's rows of one
  length, the points in all, no ink in a correction. Those are checked here by name,
  each with the 422 message that says so;
- a body the schema forbids is refused with 422. In a batch the envelope is checked
  whole, and an item the schema forbids gets its own 422 in the 200 answer (as the
  schema's description of ``items`` says).

(hypothesis-jsonschema would generate the bodies, but its 0.23.1 fails on objects with
the Hypothesis pinned here.) Deterministic (derandomized) and bounded: seconds per route.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitlab.inputs import MAX_BATCH_ITEMS, MAX_PIXELS, MAX_POINTS
from digitlab.preprocess import PreprocessConfig
from digitlab.web.app import create_app
from digitlab.web.service import RateLimit
from servers import local_client

# The JSON bodies, and the status of one accepted. A new route with a JSON body fails
# `test_every_json_body_is_tested` until it is added here.
ACCEPTED = {"/api/predict": 200, "/api/predict/batch": 200, "/api/corrections": 201}

SCHEMA_RUN = settings(
    max_examples=40,
    derandomize=True,  # the same bodies on every run
    database=None,  # no .hypothesis folder in the working tree
    deadline=None,  # a prediction's time varies on a shared machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    # Learning off and no rate limit: this is about what a body may hold, not how often.
    app = create_app(db_path=tmp_path_factory.mktemp("schema") / "c.sqlite3", learn=False)
    app.state.service.correcting = RateLimit(per_minute=1e9, burst=10**9)
    return local_client(app)


@pytest.fixture(scope="module")
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def json_body_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """The route's application/json request schema, its $refs replaced by what they name."""
    schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    components = spec["components"]["schemas"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(components[node["$ref"].split("/")[-1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


def allows(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


# --------------------------------------------------------------------------- #
# Bodies: from the schema, then damaged
# --------------------------------------------------------------------------- #

# What a value the schema says nothing about may be (extra point values, extra fields).
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=3,  # small: damage should mostly land where the schema has a say
)  # fmt: skip
FIELDS = ["note", "label", "learn", "pixels", "strokes", "items", "width"]  # names to add
WORDS_ONLY = {"title", "description", "default", "examples"}  # nothing to generate from
KNOWN = WORDS_ONLY | {"type", "anyOf", "oneOf", "not", "properties", "required",
                      "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
                      "minimum", "maximum"}  # fmt: skip


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy:
    """Values the schema allows (the tests check each with the validator all the same)."""
    unknown = set(schema) - KNOWN
    assert not unknown, f"teach from_schema the keyword(s) {unknown}: the API's schema uses them"
    if set(schema) <= WORDS_ONLY:
        return ANY_JSON
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_schema(s) for s in schema.get("anyOf", schema.get("oneOf"))])
    kind = schema["type"]
    if kind in ("number", "integer"):
        lo, hi = schema.get("minimum", -1e12), schema.get("maximum", 1e12)
        ints = st.integers(math.ceil(lo), math.floor(hi))
        ends = st.sampled_from([lo, hi])  # the bounds themselves are allowed
        return ends | ints if kind == "integer" else ends | ints | st.floats(lo, hi)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return _array(schema)
    assert kind == "object", schema
    return _object(schema)


def _array(schema: dict[str, Any]) -> st.SearchStrategy:
    first = [from_schema(s) for s in schema.get("prefixItems", [])]  # a point's x and y
    rest = from_schema(schema.get("items", {}))
    lo, hi = schema.get("minItems", 0), schema.get("maxItems")
    # Short: 64 real digits an example would be slow. The maxItems edge is an example below.
    size = st.integers(lo, lo + 4 if hi is None else min(hi, lo + 4))

    def of_length(n: int) -> st.SearchStrategy:
        more = max(0, n - len(first))
        head, tail = st.tuples(*first[:n]), st.lists(rest, min_size=more, max_size=more)
        return st.tuples(head, tail).map(lambda t: [*t[0], *t[1]])

    return size.flatmap(of_length)


def _object(schema: dict[str, Any]) -> st.SearchStrategy:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    shape = st.fixed_dictionaries(
        {k: from_schema(s) for k, s in properties.items() if k in required},
        optional={k: from_schema(s) for k, s in properties.items() if k not in required},
    )
    if schema.get("additionalProperties", True) is False:
        return shape
    taken = {*properties, *schema.get("not", {}).get("required", [])}
    # The API's own field names too: "pixels" beside "strokes" is what "not" is there for.
    names = (st.sampled_from(FIELDS) | st.text(max_size=5)).filter(lambda k: k not in taken)
    extra = st.dictionaries(names, ANY_JSON, max_size=1)
    return st.tuples(shape, extra).map(lambda t: {**t[1], **t[0]})


def even_rows(value: Any) -> Any:
    """Every grid cut to its shortest row: the schema cannot ask for rows of one length,
    so most generated grids are ragged; these still satisfy the schema, and are read."""
    if isinstance(value, list):
        return [even_rows(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: even_rows(v) for k, v in value.items()}
    rows = out.get("pixels")
    if isinstance(rows, list) and rows and all(isinstance(r, list) and r for r in rows):
        width = min(len(r) for r in rows)
        out["pixels"] = [r[:width] for r in rows]
    return out


def nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """The path of every value inside ``value``, itself included."""
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += nodes(v, (*path, i))
    return found


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(value)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return out


WRONG = ["text", True, None, {}, [], [[]], 2.5, -7]
# Past a bound somewhere (coordinates, pen, grid values, label), a fraction, 4.0 (an integer).
OTHER_NUMBERS = [1e7, -1e7, 2e9, -2e9, 10, -1, 2.5, 4.0, 1e300, 10**400]


@st.composite
def damaged(draw: st.DrawFn, bodies: st.SearchStrategy) -> Any:
    """A body from the schema with one thing changed: often no longer allowed, sometimes
    still allowed (the validator decides, not this function)."""
    body = draw(bodies)
    inside = nodes(body)[1:]  # the body itself now and then, mostly something in it
    path = draw(st.sampled_from(inside)) if inside and draw(st.integers(0, 4)) else ()
    node = body
    for step in path:
        node = node[step]
    if isinstance(node, dict):
        how = draw(st.sampled_from(["drop", "add", "type"] if node else ["add", "type"]))
    elif isinstance(node, list):
        how = draw(st.sampled_from(["many", "type"]))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        how = draw(st.sampled_from(["range", "type"]))
    else:
        how = "type"
    if how == "drop":
        smaller = dict(node)
        del smaller[draw(st.sampled_from(sorted(node)))]
        return replaced(body, path, smaller)
    if how == "add":
        value = draw(st.sampled_from([*WRONG, 3, [[[1, 2]]], [[0, 1]]]))
        return replaced(body, path, {**node, draw(st.sampled_from(FIELDS)): value})
    if how == "range":
        return replaced(body, path, draw(st.sampled_from(OTHER_NUMBERS)))
    if how == "many":
        longer = (node or [0]) * (65 // max(1, len(node)) + 1)  # past any maxItems here
        return replaced(body, path, longer)
    return replaced(body, path, draw(st.sampled_from(WRONG)))


ALLOWED: dict[str, st.SearchStrategy] = {}


def allowed_bodies(spec: dict[str, Any], path: str) -> st.SearchStrategy:
    if path not in ALLOWED:
        bodies = from_schema(json_body_schema(spec, path))
        ALLOWED[path] = bodies | bodies.map(even_rows)
    return ALLOWED[path]


# --------------------------------------------------------------------------- #
# What the server must answer
# --------------------------------------------------------------------------- #


def refused_in_words(digit: dict[str, Any], correction: bool) -> str | None:
    """The 422 message's words when a digit the schema allows breaks a rule stated in its
    descriptions; None when the digit must be read. (A grid correction may also have no
    ink: whether a grid has ink is for the ink finder to say, checked by the caller.)"""
    if "pixels" in digit:
        rows = digit["pixels"]
        if len({len(r) for r in rows}) > 1:
            return "same length"
        assert len(rows) * len(rows[0]) <= MAX_PIXELS  # never generated: the limit holds
        return None
    points = sum(len(s) for s in digit["strokes"])
    if points > MAX_POINTS:
        return "more than"
    if correction and points == 0:
        return "no ink"
    return None


def assert_refused(answer, words: str = "") -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert "\n" not in error and words in error, error


def check(client, spec: dict[str, Any], path: str, body: Any) -> None:
    schema = json_body_schema(spec, path)
    text = json.dumps(body)
    answer = client.post(path, content=text, headers={"content-type": "application/json"})
    if path == "/api/predict/batch":
        check_batch(schema, body, answer)
        return
    if not allows(schema, body):
        assert_refused(answer)
        return
    words = refused_in_words(body, correction=path == "/api/corrections")
    if words is not None:
        assert_refused(answer, words)
    elif path == "/api/corrections" and "pixels" in body and answer.status_code == 422:
        assert_refused(answer, "no ink")  # a grid in which the ink finder sees no ink
    else:
        assert answer.status_code == ACCEPTED[path], (answer.status_code, answer.text)


def check_batch(schema: dict[str, Any], body: Any, answer) -> None:
    """The envelope is checked whole; each item on its own (its own 422 in the results)."""
    envelope = {**schema, "properties": {**schema["properties"], "items": {
        **schema["properties"]["items"], "items": {}}}}  # fmt: skip
    if not allows(envelope, body):
        assert_refused(answer)
        return
    assert answer.status_code == 200, answer.text
    item_schema = schema["properties"]["items"]["items"]
    results = answer.json()["results"]
    assert len(results) == len(body["items"])
    for item, result in zip(body["items"], results, strict=True):
        words = refused_in_words(item, correction=False) if allows(item_schema, item) else ""
        if words is None:
            assert "digit" in result, result
        else:
            assert result["status"] == 422 and words in result["error"], result


# --------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------- #


def test_every_json_body_is_tested(spec) -> None:
    documented = {
        path
        for path, ops in spec["paths"].items()
        for op in ops.values()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    }
    assert documented == set(ACCEPTED)


def test_the_schema_states_the_parser_s_limits(spec) -> None:
    """The defaults the descriptions quote are the parser's (PreprocessConfig's) own."""
    config = PreprocessConfig()
    assert (config.max_points, config.max_pixels) == (MAX_POINTS, MAX_PIXELS)
    text = json.dumps(spec["components"]["schemas"])
    assert f"at most {MAX_POINTS} points" in text and f"{MAX_PIXELS / 1e6:g} megapixels" in text


@pytest.mark.parametrize("path", sorted(ACCEPTED))
@SCHEMA_RUN
@given(data=st.data())
def test_what_the_schema_allows_is_accepted(client, spec, path, data) -> None:
    """... or refused for a rule the schema states in words, with the words."""
    body = data.draw(allowed_bodies(spec, path), label="body")
    assert allows(json_body_schema(spec, path), body), "from_schema made a body it forbids"
    check(client, spec, path, body)


@pytest.mark.parametrize("path", sorted(ACCEPTED))
@SCHEMA_RUN
@given(data=st.data())
def test_what_the_schema_forbids_is_refused(client, spec, path, data) -> None:
    """Damaged bodies: those the schema still allows are checked as allowed ones."""
    check(client, spec, path, data.draw(damaged(allowed_bodies(spec, path)), label="body"))


POINT = [[140, 40], [140, 240]]
TIMED = [[140, 40, 0], [140, 240, 1_700_000_000_000]]  # [x, y, t], t in ms since 1970


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        # A digit to read: values after x and y, and other fields, are ignored.
        ("/api/predict", {"strokes": [TIMED]}, 200),
        ("/api/predict", {"strokes": [POINT], "label": 1, "note": "x"}, 200),
        ("/api/predict/batch", {"items": [{"strokes": [TIMED], "id": 7}], "note": "x"}, 200),
        ("/api/predict/batch", {"items": [{"strokes": [POINT]}] * MAX_BATCH_ITEMS}, 200),
        ("/api/predict/batch", {"items": [{"strokes": [POINT]}] * (MAX_BATCH_ITEMS + 1)}, 422),
        # ... but never both a drawing and a grid.
        ("/api/predict", {"strokes": [POINT], "pixels": "x"}, 422),
        # A correction is kept: exactly [x, y], exactly its fields.
        ("/api/corrections", {"strokes": [TIMED], "label": 1}, 422),
        ("/api/corrections", {"strokes": [POINT], "label": 1, "note": "x"}, 422),
        ("/api/corrections", {"strokes": [POINT], "label": 1, "learn": None}, 201),
        ("/api/corrections", {"strokes": [POINT], "label": 4.0}, 201),  # an integer in JSON
        ("/api/corrections", {"strokes": [POINT], "label": True}, 422),
    ],
)
def test_the_decisions_read_the_same_in_the_schema_and_the_server(
    client, spec, path, body, status
) -> None:
    """Extra values in a point and extra fields: read and ignored, or stored and refused."""
    assert allows(json_body_schema(spec, path), body) == (status != 422)
    answer = client.post(path, json=body)
    assert answer.status_code == status, answer.text
    if path == "/api/predict/batch" and status == 200:
        assert all("digit" in r for r in answer.json()["results"])
