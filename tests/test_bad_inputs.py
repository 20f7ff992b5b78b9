"""The bad-input corpus (``tests/bad_inputs``): every bad input gets the outcome the user deserves.

Each case states its expected class (``clear``: a short error naming what was expected and what
came, exit code 2 and no traceback for the command line; ``handled``: the input is dealt with
sensibly, as the case's check says). ``benchmarks/bad_inputs.py`` runs the same corpus against any
checkout and counts the outcomes.

One tiny trained checkpoint (2 steps, 16x16 patches) is shared by all cases through a
session-scoped context; command lines run in-process through ``selfinv.cli.main`` except the few
cases where a real ``python -m selfinv.cli`` process matters.
"""

import pytest

from bad_inputs import CASES, Context, classify, run_case


@pytest.fixture(scope="session")
def corpus_context(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("bad_inputs"))


def test_case_ids_are_unique_and_the_corpus_is_big_enough():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 80
    assert {c.group for c in CASES} == {"api", "cli", "files", "checkpoints", "faults"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.id.endswith("_process") else c
                                  for c in CASES], ids=[c.id for c in CASES])
def test_bad_input(case, corpus_context):
    outcome = run_case(case, corpus_context)
    assert classify(outcome) == case.expected, outcome.report()


# -- the classifier itself, on made-up outcomes (so the corpus's verdicts can be trusted) ---------------

def _case(expected="clear", **kw):
    from bad_inputs.harness import Case, cli

    return Case("made_up", "cli", "made-up case", None, cli("predict"), expected, **kw)


def _cli_outcome(case, code, stderr="", exc=None):
    from bad_inputs.harness import Outcome

    o = Outcome(case=case, kind="cli", argv=["predict", "--input", "x.png"], exit_code=code, stderr=stderr)
    if exc is not None:
        o.exc_type, o.exc_msg = type(exc).__name__, str(exc)
    return o


def test_classifier_command_line_outcomes():
    case = _case(mentions=("rgb.png", ("3 channel", "rgb")))
    ok = "selfinv predict: error: rgb.png has 3 channels but the checkpoint's network takes 1 (grayscale)\n"
    assert classify(_cli_outcome(case, 2, "some log line\n" + ok)) == "clear"
    # advice the command does not offer, a missing name, a long message, another exit code, a traceback
    assert classify(_cli_outcome(case, 2, ok.rstrip() + "; read it with as_gray=True\n")) == "traceback"
    assert classify(_cli_outcome(case, 2, ok.rstrip() + "; pass --invert 1\n")) == "traceback"
    assert classify(_cli_outcome(case, 2, "selfinv predict: error: wrong input\n")) == "traceback"
    assert classify(_cli_outcome(case, 2, ok + "a\nb\n")) == "traceback"
    assert classify(_cli_outcome(case, 1, ok)) == "traceback"
    assert classify(_cli_outcome(case, 2, "Traceback (most recent call last):\n" + ok)) == "traceback"
    assert classify(_cli_outcome(case, None, exc=ValueError("rgb.png has 3 channels"))) == "traceback"
    # no error where one was due; an offered option may be advised
    assert classify(_cli_outcome(case, 0)) == "silent"
    assert classify(_cli_outcome(case, 2, ok.rstrip() + "; see --format\n")) == "clear"


def test_classifier_handled_error_ok_and_invariants():
    def check(o, v):
        return True, "fine"

    assert classify(_cli_outcome(_case("handled", check=check), 0)) == "silent"  # check never ran: not judged fine
    o = _cli_outcome(_case("handled", check=check), 0)
    o.check_result = (True, "fine")
    assert classify(o) == "handled"
    o = _cli_outcome(_case("handled", check=check, error_ok=True), 2, "selfinv predict: error: dtype float16\n")
    assert classify(o) == "handled"
    o = _cli_outcome(_case(), 2, "selfinv predict: error: diverged\n")
    o.violations.append("checkpoint with NaN weights")
    assert classify(o) == "silent"


def test_classifier_library_outcomes():
    from bad_inputs.harness import Outcome, run_api

    case = _case(mentions=("mask",))

    def raised(fn):
        o = run_api(fn)
        o.case = case
        return o

    def selfinv_value_error():
        from selfinv.physics import Denoising

        Denoising().with_params(mask=1)  # selfinv's own TypeError naming 'mask'

    assert classify(raised(selfinv_value_error)) == "clear"
    assert classify(raised(lambda: {}["mask"])) == "traceback"  # KeyError
    assert classify(raised(lambda: int("mask"))) == "traceback"  # ValueError, not raised by selfinv
    assert classify(raised(lambda: None)) == "silent"
    assert classify(Outcome(case=case, setup_error="x")) == "traceback"
