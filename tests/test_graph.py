"""`digitlab.graph`, the one ONNX graph module, and the import rules that keep it the one:
the model-deriving modules share it instead of importing each other."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from digitlab import graph as gr
from digitlab.errors import DigitlabError
from fixtures_images import tiny_model

SRC = Path(__file__).resolve().parents[1] / "src" / "digitlab"


def imported(module: str) -> set[str]:
    """Every module ``digitlab.<module>`` imports, at the top or inside a function: for
    ``from digitlab import x``, ``digitlab.x`` too (x may be a module)."""
    tree = ast.parse((SRC / f"{module.replace('.', '/')}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_from(module: str, target: str) -> list[str]:
    return sorted(n for n in imported(module) if n == target or n.startswith(target + "."))


@pytest.mark.parametrize("module", ["ensemble", "cascade", "notdigit", "graph", "derive"])
def test_the_deriving_modules_do_not_import_adapt(module):
    assert imports_from(module, "digitlab.adapt") == []


@pytest.mark.parametrize("module", ["learning", "adapt", "desktop"])
def test_the_layers_below_the_web_app_do_not_import_it(module):
    assert imports_from(module, "digitlab.web") == []


def test_the_import_check_sees_imports_inside_functions():
    # cascade imports digitlab.notdigit inside `cascade_graph` only.
    assert imports_from("cascade", "digitlab.notdigit") == ["digitlab.notdigit",
                                                            "digitlab.notdigit.strip"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (200, 28, 28), np.uint8), np.arange(200) % 10
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", images, labels)


def test_a_graph_run_reads_inner_tensors_and_outputs_alike(tiny):
    from digitlab.modelfile import OnnxModel

    model = OnnxModel(tiny)
    w = gr.initializer(gr.load(model.graph).graph, "W")
    x = np.random.default_rng(1).random((1500, 28, 28), dtype=np.float32)
    tensors = gr.Tensors(model.graph, model.card.input, ["xw", "probabilities"])
    xw, probs = tensors.run(x, batch_size=400)  # 4 runs, concatenated
    np.testing.assert_allclose(xw, x.reshape(-1, 784) @ w, rtol=1e-4, atol=1e-4)
    # Reading "xw" stops onnxruntime fusing the MatMul and the Add: a rounding apart.
    np.testing.assert_allclose(probs, model.predict_proba(x), atol=1e-6)
    alone = gr.Tensors(model.graph, model.card.input, ["probabilities"]).run(x, batch_size=400)
    np.testing.assert_array_equal(alone[0], model.predict_proba(x))  # batches change nothing
    assert tensors.outputs[1] == "probabilities" and tensors.outputs[0] != "xw"
    empty = tensors.run(np.zeros((0, 28, 28), np.float32))
    assert [v.shape for v in empty] == [(0, 10), (0, 10)]


def test_outputs_added_and_stripped_leave_the_graph_as_it_was(tiny):
    graph = tiny.read_bytes()
    assert gr.with_outputs(graph, ["probabilities"]) == (graph, ["probabilities"])
    assert gr.without_outputs(graph, {"not_digit"}) is graph
    extended, names = gr.with_outputs(graph, ["xw", "xw"])
    assert names == ["xw_output", "xw_output_1"]
    stripped = gr.without_outputs(extended, set(names))
    g = gr.load(stripped).graph
    assert [o.name for o in g.output] == ["probabilities"] and len(g.node) == 3
    assert gr.needed(g, "xw") == {0} and gr.needed(g, "probabilities") == {0, 1, 2}


def test_a_graph_without_a_head_is_a_graph_error_said_by_whoever_asked(tiny):
    g = gr.load(tiny.read_bytes()).graph
    assert gr.final_softmax(g).op_type == "Softmax"
    with pytest.raises(gr.GraphError, match="fed by Add, not by a linear layer"):
        gr.find_head(g)
    assert issubclass(gr.GraphError, DigitlabError)


def test_an_error_names_parameters_as_each_front_end_calls_them():
    error = DigitlabError.naming("{out} is the same file as {model}: {path}", "out", "model",
                                 path="/tmp/{odd}.onnx")  # fmt: skip
    assert str(error) == "out is the same file as model: /tmp/{odd}.onnx"
    cli = error.named({"out": "--out", "model": "MODEL"})
    assert cli == "--out is the same file as MODEL: /tmp/{odd}.onnx"
    assert DigitlabError("plain").named({"out": "--out"}) == "plain"
