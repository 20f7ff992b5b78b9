"""``selfinv reproduce``: the claims of the tutorial and papers, trained through the engine and reported.

See ``selfinv.reproduce.runner`` (the command, cache and runner), ``claims`` (tasks, rows, claims,
verdicts), ``report`` (Markdown, JSON, figures) and one module per family of claims: ``denoising``,
``incomplete``, ``sei``, ``theory`` and ``selection`` (checkpoint selection by the validation loss).
"""

from selfinv.reproduce.runner import reproduce, reproduce_cmd

__all__ = ["reproduce", "reproduce_cmd"]
