"""The bad-input corpus: what a hostile but fair user feeds selfinv, and the outcome each input deserves.

``corpus.CASES`` holds the cases as data (``harness.Case``); ``harness.run_case`` runs one and
``harness.classify`` sorts its outcome into ``clear`` / ``traceback`` / ``silent`` / ``handled``
(the rules are in the ``harness`` docstring). ``tests/test_bad_inputs.py`` asserts each case gets the
class it deserves; ``benchmarks/bad_inputs.py`` counts the classes of any checkout.

The package imports nothing from ``selfinv`` at import time, so it loads against any checkout; a case
whose API does not exist there is recorded as ``traceback``.
"""

from bad_inputs.corpus import CASES  # noqa: F401
from bad_inputs.harness import CLASSES, GROUPS, Case, Context, Outcome, classify, explain, run_case  # noqa: F401
