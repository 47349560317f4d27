"""Downloads from the Hugging Face hub with retries and errors that say what to do.

`huggingface_hub` does the transfer (HF_ENDPOINT, HF_TOKEN, resumption within one call; its byte
bar in a terminal, plain log lines with bytes and rate otherwise); this module adds what a
workflow step needs around it: a file appears at its final path only when complete, transient
failures are retried, and a hub that cannot be reached is reported with the URL and the
endpoint in use instead of a cache-miss message.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .errors import HubError
from .progress import download_bar_class

log = logging.getLogger(__name__)


def hub_endpoint() -> str:
    """The endpoint in force now: HF_ENDPOINT is read at call time, not at import time."""
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def download_file(
    repo_id: str,
    filename: str,
    dest: str | os.PathLike[str],
    *,
    repo_type: str = "dataset",
    revision: str = "main",
    retries: int = 3,
    retry_wait: float = 5.0,
    endpoint: str | None = None,
) -> Path:
    """Download `filename` of a hub repository to `dest`, which appears only when complete.

    The client writes into a staging folder beside `dest`; the finished file is then moved
    into place with one rename, so a killed download leaves nothing at `dest`.
    """
    dest = Path(dest)
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=endpoint)
    staging = dest.parent / f".download-{dest.name}"
    attempts = max(1, retries)
    for attempt in range(1, attempts + 1):
        try:
            path = hf_hub_download(
                repo_id,
                filename,
                repo_type=repo_type,
                revision=revision,
                local_dir=staging,
                endpoint=endpoint,
                tqdm_class=download_bar_class(),
            )
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
            shutil.rmtree(staging, ignore_errors=True)
            return dest
        except GatedRepoError as exc:
            raise HubError(
                f"{url}: the repository {repo_id} is gated. Accept its terms on the hub and set "
                f"HF_TOKEN to a token with access ({exc.__class__.__name__})."
            ) from exc
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise HubError(
                f"{url}: repository {repo_id} (revision {revision}) not found on {endpoint}. "
                "Check the repo id, or set HF_TOKEN if it is private."
            ) from exc
        except RemoteEntryNotFoundError as exc:
            raise HubError(f"{url}: {filename} does not exist in {repo_id}@{revision}") from exc
        except Exception as exc:  # noqa: BLE001 - every other failure is worth another try
            reason = _reason(exc)
            if attempt == attempts:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(exc, LocalEntryNotFoundError):
                    raise HubError(
                        f"cannot reach the Hugging Face hub to download {url} "
                        f"(HF_ENDPOINT={os.environ.get('HF_ENDPOINT', '<unset>')}, "
                        f"endpoint {endpoint}) after {attempts} tries: {reason}. Check the "
                        "network or HF_ENDPOINT, or place the file there yourself."
                    ) from exc
                raise HubError(
                    f"download of {url} failed after {attempts} tries "
                    f"(HF_ENDPOINT={os.environ.get('HF_ENDPOINT', '<unset>')}): {reason}"
                ) from exc
            wait = retry_wait * attempt
            log.warning(
                "download of %s failed (%s); try %d of %d in %.0f s",
                url,
                reason,
                attempt + 1,
                attempts,
                wait,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def _reason(exc: BaseException) -> str:
    """The innermost cause is the useful part of a hub client error chain."""
    parts = [f"{type(exc).__name__}: {exc}".strip()]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(parts) < 3:
        parts.append(f"{type(cause).__name__}: {cause}".strip())
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(p.splitlines()[0] for p in parts)


def check_repo_access(repo_id: str, revision: str = "main", repo_type: str = "model") -> None:
    """Fail before any heavy work when a repository cannot be used: gated, missing, offline."""
    from huggingface_hub import HfApi

    endpoint = hub_endpoint()
    try:
        HfApi(endpoint=endpoint).auth_check(repo_id, repo_type=repo_type)
    except GatedRepoError as exc:
        raise HubError(
            f"{endpoint}/{repo_id}: the repository is gated. Accept its licence on the hub, then "
            "set HF_TOKEN to a token of that account (or `hf auth login`)."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise HubError(
            f"{endpoint}/{repo_id}: repository not found or not visible without a token. "
            "Check the name, set HF_TOKEN, or point checkpoint.load_path at a local copy."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - network failures come in many classes
        raise HubError(
            f"cannot reach the Hugging Face hub at {endpoint} to check {repo_id}@{revision}: "
            f"{_reason(exc)}. Check the network or HF_ENDPOINT, set HF_HUB_OFFLINE=1 to use the "
            "local cache, or point checkpoint.load_path at a local copy."
        ) from exc
