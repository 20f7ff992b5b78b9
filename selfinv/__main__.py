"""``python -m selfinv`` = the ``selfinv`` command."""

from selfinv.cli import run_as_script

if __name__ == "__main__":
    run_as_script()
