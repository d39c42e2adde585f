"""The README and docs/ cannot drift from the code: generated tables equal their records,
every documented command parses with gpmask's own parser (and the cheap ones run), every
relative link resolves, the README stays short."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest

from gpmask.cli import VERBS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fenced_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


def commands(path: Path) -> list[str]:
    """Every `gpmask ...` / `gpmask-export ...` line of the fenced blocks of ``path``, with
    backslash continuations joined and a leading `$ ` dropped."""
    found = []
    for block in fenced_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith(("gpmask ", "gpmask-export ")):
                found.append(line)
    return found


def argv_of(command: str) -> list[str]:
    """The argument list `gpmask` receives (`gpmask-export ARGS` is `gpmask export ARGS`)."""
    words = shlex.split(command, comments=True)
    return (["export"] if words[0] == "gpmask-export" else []) + words[1:]


ALL_COMMANDS = [(path.relative_to(ROOT).as_posix(), command)
                for path in DOCUMENTS for command in commands(path)]
PARSED = [(where, c) for where, c in ALL_COMMANDS if "--help" not in argv_of(c)]
HELP = [(where, c) for where, c in ALL_COMMANDS if "--help" in argv_of(c)]


def test_the_documents_hold_commands_of_every_verb() -> None:
    verbs = {argv_of(c)[0] for _, c in PARSED}
    assert verbs == set(VERBS), set(VERBS) ^ verbs
    assert {argv_of(c)[0] for _, c in HELP if argv_of(c)[0] != "--help"} == set(VERBS)


@pytest.mark.parametrize(("where", "command"), PARSED)
def test_documented_command_parses(where: str, command: str) -> None:
    try:
        build_parser().parse_args(argv_of(command))
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")


def test_a_renamed_option_fails_the_parse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv_of("gpmask run bundle -i a.mp4 -o b.mp4 --wether rain"))
    assert exc.value.code == 2
    assert "unrecognized arguments: --wether rain" in capsys.readouterr().err


@pytest.mark.parametrize(("where", "command"), HELP)
def test_documented_help_runs(where: str, command: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv_of(command)) == 0, where
    out = capsys.readouterr().out
    verb = argv_of(command)[0]
    assert out.startswith(f"usage: gpmask {verb if verb != '--help' else ''}".rstrip())


def test_no_command_hides_in_an_indented_block() -> None:
    """Commands live in fenced blocks, where the tests above find them."""
    for path in DOCUMENTS:
        outside = FENCE.sub("", path.read_text())
        hidden = [line for line in outside.splitlines()
                  if re.match(r"^ {4,}\$? ?gpmask(-export)? ", line)]
        assert not hidden, (path, hidden)


@pytest.mark.slow
def test_documented_bundle_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The documented commands that need only the shipped demo run as written: export the
    demo, inspect and check the bundle, and the README's Python API block on it."""
    monkeypatch.chdir(tmp_path)
    wanted = ["gpmask export demo -o bundle", "gpmask inspect demo --layers",
              "gpmask inspect bundle --layers", "gpmask check bundle --json"]
    documented = {c for _, c in ALL_COMMANDS}
    for command in wanted:
        assert command in documented, command
        assert main(argv_of(command)) == 0, (command, capsys.readouterr().err)
    assert '"openvino"' in capsys.readouterr().out  # check's JSON lists the registry
    python = [b for b in fenced_blocks(README) if "from gpmask.runtime import Restorer" in b]
    assert len(python) == 1
    namespace: dict = {}
    exec(compile(python[0], "README.md", "exec"), namespace)
    frame = namespace["frame"]
    assert namespace["clean"].shape == frame.shape and namespace["clean"].dtype == frame.dtype
    assert [b.shape for b in namespace["batch"]] == [frame.shape] * 2


def test_tables_are_what_the_records_give() -> None:
    report = _report()
    assert report.stale_documents(write=False) == []
    for name in ("quality", "router", "cpu-goals"):
        assert f"<!-- report:{name} -->" in README.read_text(), name
        assert report.records(report.TABLES[name][0]), f"no record for the {name} table"


def test_a_figure_typed_by_hand_is_caught() -> None:
    report = _report()
    text = README.read_text()
    table = re.search(r"<!-- report:quality -->\n(.*?)<!-- /report:quality -->", text, re.S)
    figure = re.search(r"\| (\d+\.\d\d) \|", table[1])
    edited = text.replace(figure[0], f"| {float(figure[1]) + 1:.2f} |", 1)
    assert report.regenerate(edited) == text != edited


def test_router_table_marks_each_goal_from_the_record() -> None:
    """bench_router's record shape: a class under 90 % fails the training-style row even
    with 96 % overall; a change followed in 4 frames fails its clip row; the cost is the
    record's ratio."""
    report = _report()

    def frames(overall, per_class):
        return {"frames": 256, "accuracy": overall, "per_class": per_class}

    def clip(lag):
        return {"frames": 130, "accuracy": 0.9, "lags": [{"frames": lag}] * 12,
                "max_lag": lag, "flicker": 0, "misrouted": 2}

    record = {
        "accuracy": {
            "heldout_frames_training_style": {"frames": frames(0.96, {"clear": 0.85,
                                                                      "rain": 0.99}),
                                              "clip": clip(2)},
            "heldout_frames_heldout_style": {"frames": frames(0.91, {"clear": 0.8}),
                                             "clip": clip(4)},
            "demo_clip": {"raw": frames(0.95, {"snow": 0.9}),
                          "routed": {"frames": 96, "accuracy": 0.93, "misrouted": 1}},
        },
        "cost": {"size": [720, 1280], "router_ms": 2.0, "restore_ms": 40.0,
                 "router_over_restore": 0.05, "backend": "openvino", "precision": "fp32"},
    }
    rows = report.router(record)[2:]
    assert rows[0].startswith("| held-out frames, training style (256 frames) | 96.0% | "
                              "clear 85.0%, rain 99.0% |") and rows[0].endswith("❌ |")
    assert rows[1].startswith("| held-out frames, held-out style (256 frames) | 91.0% |")
    assert rows[1].endswith("✅ |")
    assert rows[2].endswith("✅ |") and "slowest change 2 frames" in rows[2]
    assert rows[3].endswith("❌ |") and "slowest change 4 frames" in rows[3]
    assert rows[4].startswith("| demo clip, weather chosen (96 frames) | 93.0% |")
    assert rows[5].startswith("| cost at 720x1280 | 5.0% | router step 2.0 ms, restore step "
                              "40 ms (openvino fp32) |") and rows[5].endswith("✅ |")


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 250


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: {target}"
        if anchor and linked.suffix == ".md":
            headings = [_slug(h) for h in re.findall(r"^#+ (.*)$", linked.read_text(), re.M)]
            assert anchor in headings, f"{path.name}: {target}"


def test_readme_and_docs_link_each_other() -> None:
    readme = README.read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, page.name
        assert "(../README.md)" in page.read_text(), page.name


def test_auto_order_in_the_docs_is_the_registry() -> None:
    from gpmask.runtime.backends import REGISTRY

    text = (ROOT / "docs" / "runtime.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `([\w-]+)` \| (\w+) \| ([\w\-, ]+) \|$", text, re.M)
    assert rows == [(str(i), s.name, s.device, ", ".join(s.precisions))
                    for i, s in enumerate(REGISTRY, 1)]


def test_documents_use_no_absolute_local_paths() -> None:
    for path in DOCUMENTS:
        assert os.fspath(ROOT) not in path.read_text(), path
