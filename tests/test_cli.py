"""The command line's one grammar: every option explained, one name per meaning, one size
syntax, one error line."""

from __future__ import annotations

import argparse

import pytest

from gpmask.cli import VERBS, build_parser, main
from gpmask.sizes import size_argument, sizes_argument

#: Verbs that show progress bars, each of which must let the user turn them off.
VERBS_WITH_PROGRESS = ("train", "eval", "export", "calibrate", "build", "train-router", "run",
                       "demo", "bench", "export-triton")


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_every_option_has_help_that_gives_its_default() -> None:
    problems = []
    for verb, parser in _verbs().items():
        for action in _options(parser):
            name = action.option_strings[-1] if action.option_strings else action.dest
            if not (action.help or "").strip():
                problems.append(f"{verb} {name}: no help")
            elif (action.option_strings and action.default not in (None, False)
                  and "default" not in action.help):
                problems.append(f"{verb} {name}: help does not give its default "
                                f"{action.default!r}")
    assert problems == []


@pytest.mark.parametrize("verb", list(VERBS))
def test_help_lists_every_option(verb: str, capsys) -> None:
    assert main([verb, "--help"]) == 0
    text = capsys.readouterr().out
    for action in _options(_verbs()[verb]):
        for option in action.option_strings:
            assert option in text, (verb, option)


def test_one_name_per_meaning() -> None:
    """Progress is --no-progress everywhere; a size is HxW everywhere (one parser)."""
    for verb, parser in _verbs().items():
        options = {o for a in _options(parser) for o in a.option_strings}
        assert "--quiet" not in options, verb
        assert ("--no-progress" in options) == (verb in VERBS_WITH_PROGRESS), verb
        for action in _options(parser):
            # every frame size; --batch-size is a count
            if action.dest.endswith("_size") and action.dest != "batch_size" or \
                    action.dest == "size":
                assert action.type is size_argument and action.metavar == "HxW", \
                    (verb, action.dest)
            if action.dest.endswith("sizes"):
                assert action.type is sizes_argument, (verb, action.dest)


def test_backend_choices_come_from_the_runtime() -> None:
    from gpmask.runtime.backends import BACKENDS

    for verb in ("run", "demo"):
        backend = next(a for a in _options(_verbs()[verb]) if a.dest == "backend")
        assert tuple(backend.choices) == BACKENDS
        assert ", ".join(BACKENDS) in backend.help


@pytest.mark.parametrize("argv, message", [
    (["frob"], "gpmask: argument VERB: invalid choice: 'frob'"),
    (["demo", "--size", "192"], "gpmask demo: argument --size: size '192' is not HxW"),
    (["export", "demo", "-o", "b", "--size", "0x32"],
     "gpmask export: argument --size: size '0x32' is not HxW"),
    (["bench", "b", "--sizes", "720x1280,big"],
     "gpmask bench: argument --sizes: size 'big' is not HxW"),
    (["run", "b", "-i", "x", "-o", "y", "--backend", "cuda"],
     "gpmask run: argument --backend: invalid choice: 'cuda'"),
    (["run", "b"], "gpmask run: the following arguments are required: -i/--input"),
])
def test_a_bad_option_is_one_error_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpmask: error: "), err
    assert message in err and "--help" in err
