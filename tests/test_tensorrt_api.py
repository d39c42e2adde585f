"""Every TensorRT call the runtime backend makes, checked against TensorRT's real bindings.

No TensorRT builder installs where gpmask is tested, but NVIDIA's lean runtime does
(``pip install tensorrt-lean-cu13``, in the ``dev`` extra): ``import tensorrt_lean`` works
without a GPU and exposes the runtime API (``Runtime``, ``ICudaEngine``,
``IExecutionContext``, their enums). This test reads
``gpmask/runtime/backends/tensorrt.py`` with ``ast`` and checks each use of TensorRT
against those bindings, so a call added to the backend is checked without touching the
test:

- ``trt.X`` (the module), and attributes of values named ``*engine``, ``*context``,
  ``*runtime``, ``*logger`` or taken from ``*engines[...]``, ``*contexts[...]``
  (``ICudaEngine``, ``IExecutionContext``, ``Runtime``, ``Logger``) must exist;
- a call must fit one of the signatures the bindings document (pybind11 writes them
  into ``__doc__``): positional count and keyword names; a class called is checked
  against its ``__init__``;
- an attribute read without a call must not be a method (a forgotten call), one
  assigned must be a property with a setter;
- a value a TensorRT call returns (per the documented return type) must be bound to a
  name of the matching kind, so that its own uses are checked in turn;
- uses under ``if not is_lean_runtime(trt):`` belong to the full library only: they
  must be absent from the lean runtime (else the guard would be needless).

Creating a ``Runtime`` needs a GPU (without one it crashes the process), so nothing here
instantiates TensorRT objects: the checks are of names and signatures.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import gpmask.runtime.backends.tensorrt as backend_module

trt = pytest.importorskip("tensorrt_lean", reason="TensorRT's lean runtime is not installed "
                                                  "(pip install tensorrt-lean-cu13)")

#: A name's ending -> the TensorRT class its value is (an item of ``engines[...]``,
#: ``contexts[...]``: those are dicts of them).
KINDS = {"engine": "ICudaEngine", "context": "IExecutionContext", "runtime": "Runtime",
         "logger": "Logger"}
#: The calls the backend cannot do without: if the test stops seeing them, it has stopped
#: reading the backend, not the backend its calls.
ESSENTIAL = {"Runtime", "deserialize_cuda_engine", "create_execution_context",
             "ExecutionContextAllocationStrategy", "device_memory_size_v2", "set_device_memory",
             "set_input_shape", "set_tensor_address", "execute_async_v3", "get_tensor_shape"}


def _name(node: ast.expr) -> str | None:
    """``engine`` for ``engine``, ``self.engine`` and ``self.engines[w]``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        plural = _name(node.value)
        return plural[:-1] if plural and plural.endswith("s") else None
    return None


def _kind(name: str | None) -> Any:
    """The TensorRT class a value named ``name`` holds, by its ending, or None."""
    if name is None:
        return None
    for ending, cls in KINDS.items():
        if name == ending or name.endswith(f"_{ending}") or name == f"_{ending}":
            return getattr(trt, cls)
    return None


def _resolve(node: ast.expr) -> Any:
    """The TensorRT module, class or member an expression stands for, or None when it is
    not TensorRT's."""
    if isinstance(node, ast.Name) and node.id == "trt":
        return trt
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value)
        if base is not None and (inspect.ismodule(base) or inspect.isclass(base)) \
                and hasattr(base, node.attr):
            member = getattr(base, node.attr)
            if inspect.ismodule(base) or inspect.isclass(member) or \
                    not inspect.isroutine(member) and not isinstance(member, property):
                return member
    if isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
        return _kind(_name(node))
    return None


def _split(params: str) -> list[str]:
    """Top-level comma-separated parts of a signature (types nest [], (), <>)."""
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "[(<" and 1 or char in "])>" and -1 or 0
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [part for part in [*parts, current.strip()] if part]


def signatures(function: Any, name: str) -> list[tuple[list[tuple[str, bool]], str]]:
    """Each documented overload of ``function``: its parameters after ``self`` as (name,
    has a default), and its return type."""
    if inspect.isfunction(function):
        parameters = inspect.signature(function).parameters.values()
        return [([(p.name, p.default is not p.empty) for p in parameters], "")]
    found = []
    for line in (function.__doc__ or "").splitlines():
        match = re.match(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> (.*)$", line.strip())
        if match and match.group(1) != "*args, **kwargs":
            params = [(p.split(":")[0].strip(), "=" in p) for p in _split(match.group(1))]
            found.append(([p for p in params if p[0] != "self"], match.group(2)))
    return found


def _fits(call: ast.Call, params: list[tuple[str, bool]]) -> bool:
    positional = len(call.args)
    keywords = {k.arg for k in call.keywords}
    names = [p for p, _ in params]
    return (positional <= len(params) and keywords <= set(names[positional:])
            and all(has_default or p in keywords for p, has_default in params[positional:]))


def _full_only_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if not is_lean_runtime(trt):``."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "is_lean_runtime" in ast.unparse(node.test) \
                and isinstance(node.test, ast.UnaryOp):
            guarded |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return guarded


def tensorrt_uses() -> tuple[list[str], set[str]]:
    """Problems with the backend's TensorRT calls, in source order, and the members it
    uses."""
    tree = ast.parse(Path(backend_module.__file__).read_text())
    parents = {id(child): parent for parent in ast.walk(tree)
               for child in ast.iter_child_nodes(parent)}
    full_only = _full_only_nodes(tree)
    problems, used = [], set()
    attributes = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Attribute)),
                        key=lambda node: (node.lineno, node.col_offset))
    for node in attributes:
        base = _resolve(node.value)
        if base is None:
            continue
        where = f"line {node.lineno}: {ast.unparse(node)}"
        used.add(node.attr)
        if id(node) in full_only:
            if hasattr(base, node.attr):
                problems.append(f"{where}: guarded as full-library only, but the lean runtime "
                                f"has it")
            continue
        if not hasattr(base, node.attr):
            problems.append(f"{where}: {getattr(base, '__name__', base)} has no {node.attr!r} "
                            f"in TensorRT {trt.__version__}")
            continue
        member = getattr(base, node.attr)
        parent = parents.get(id(node))
        if isinstance(parent, ast.Call) and parent.func is node:
            target = member.__init__ if inspect.isclass(member) else member
            overloads = signatures(target, "__init__" if inspect.isclass(member) else node.attr)
            if not overloads:
                problems.append(f"{where}: called, but it is not a documented function")
                continue
            fitting = [returned for params, returned in overloads if _fits(parent, params)]
            if not fitting:
                problems.append(f"{where}: no documented signature takes "
                                f"{ast.unparse(parent)}: {overloads}")
                continue
            returned = node.attr if inspect.isclass(member) else fitting[0].split(".")[-1]
            assigned = parents.get(id(parent))
            if returned in KINDS.values() and isinstance(assigned, ast.Assign):
                for target_node in assigned.targets:
                    kind = _kind(_name(target_node))
                    if kind is None or kind.__name__ != returned:
                        problems.append(f"{where}: returns {returned}; name the value so its "
                                        f"kind shows ({', '.join(KINDS)} endings)")
        elif isinstance(node.ctx, ast.Store):
            if not (isinstance(member, property) and member.fset is not None):
                problems.append(f"{where}: assigned, but it is not a settable property")
        elif inspect.isroutine(member) and not isinstance(parent, ast.Call):
            problems.append(f"{where}: a method read without being called")
    return problems, used


def test_every_tensorrt_call_of_the_backend_exists_in_the_real_bindings() -> None:
    problems, used = tensorrt_uses()
    assert problems == []
    assert ESSENTIAL <= used, ESSENTIAL - used


def test_the_checks_catch_a_wrong_call(tmp_path, monkeypatch) -> None:
    """A misspelt method, a wrong argument count, an uncalled method, a read-only property
    assigned and a returned engine under an unchecked name are all reported."""
    source = '''
trt = None
def load(plan, strategy):
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    plain = runtime.deserialize_cuda_engine(plan)
    engine = runtime.deserialize_cuda_engine(plan)
    context = engine.create_execution_context(strategy, 3)
    context.execute_async_v2(0)
    engine.num_io_tensors = 2
    return engine.get_tensor_name, trt.TensorIOMode.INPUT, trt.NoSuchEnum
'''
    path = tmp_path / "backend.py"
    path.write_text(source)
    monkeypatch.setattr(backend_module, "__file__", str(path))
    problems, _ = tensorrt_uses()
    assert [problem.split(": ", 1)[1].split(":")[0] for problem in problems] == [
        "runtime.deserialize_cuda_engine",
        "engine.create_execution_context",
        "context.execute_async_v2",
        "engine.num_io_tensors",
        "engine.get_tensor_name",
        "trt.NoSuchEnum",
    ]
