"""Shared behaviour of the module commands: logging set-up and errors without tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from .errors import CosmosPosttrainError


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes: a Snakemake job and a test both
    replace it, and a handler bound to an old, closed stream would lose every line."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(debug: bool = False, stream=None) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(stream) if stream else _CurrentStderr()],
        force=True,
    )


def split_overrides(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """Split `cmd --flags -- key=value ...` (the seed's form) into flags and overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    split = argv.index("--")
    return argv[:split], argv[split + 1 :]


def run_cli(action: Callable[[], object], debug: bool = False) -> int:
    """Run `action`; a known error prints its message and exits 1, anything else raises."""
    setup_logging(debug)
    try:
        action()
    except (CosmosPosttrainError, FileNotFoundError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_snakemake_job(log_path: str, action: Callable[[], object]) -> None:
    """Run a workflow script's body with stderr and logging in the rule's log file.

    A known error is written as one clear line (Snakemake shows the log of a failed job) and
    the job exits 1; anything unexpected keeps its traceback.
    """
    log_file = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives on
    sys.stderr = log_file
    setup_logging(stream=log_file)
    try:
        action()
    except (CosmosPosttrainError, FileNotFoundError) as exc:
        logging.getLogger("cosmos_posttrain").error("%s", exc)
        print(f"error: {exc}", file=sys.__stderr__)
        sys.exit(1)
