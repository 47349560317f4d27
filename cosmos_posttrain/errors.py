"""Errors that reach the user: each names the file or resource and says what to do."""

from __future__ import annotations


class CosmosPosttrainError(Exception):
    """Base class: caught by the command-line entry points and printed without a traceback."""


class HubError(CosmosPosttrainError):
    """A download from the Hugging Face hub failed in a way the user must act on."""


class VideoError(CosmosPosttrainError):
    """A video file cannot be opened, is truncated, or holds no video stream."""


class DatasetError(CosmosPosttrainError):
    """A dataset folder has problems; the message lists every one of them with its file."""

    def __init__(self, root: str, problems: list[str]) -> None:
        self.root = root
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"dataset {root} has {n} problem{'s' if n != 1 else ''}:\n{lines}")
