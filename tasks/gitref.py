"""Read a folder of a git repository as it was at a ref (branch, tag or commit).

CI systems name the release they migrate by git ref; the migration flow materializes the
migrations folder at that ref into a temporary directory, so the working tree of the runner
(whatever is checked out there) never decides what gets applied.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from opsflows.errors import ConfigurationError

_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}~^-]{0,199}$")


def _git(repository: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603 - fixed argv, validated ref
        ["git", "-C", str(repository), *args], capture_output=True, check=False
    )


@contextlib.contextmanager
def folder_at_ref(repository: str | Path, ref: str, folder: str) -> Iterator[Path]:
    """Yield a temporary copy of ``folder`` (relative to the repository) at ``ref``.

    Raises:
        ConfigurationError: not a git repository, an invalid or unknown ref, or a folder
            that does not exist at that ref; checked before anything is changed.
    """
    repo = Path(repository).expanduser()
    relative = PurePosixPath(folder.strip("/") or ".")
    if not _REF.match(ref) or ".." in ref:
        raise ConfigurationError(f"git ref {ref!r} is not a valid ref name")
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigurationError(f"folder {folder!r} must be a path inside the repository")
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit.returncode != 0:
        raise ConfigurationError(
            f"git ref {ref!r} is not known in {repo}",
            hint="fetch it first (git fetch) or pass a branch, tag or commit that exists",
        )
    sha = commit.stdout.decode().strip()
    archive = _git(repo, "archive", "--format=tar", sha, "--", str(relative))
    if archive.returncode != 0:
        raise ConfigurationError(
            f"folder {folder!r} does not exist at {ref} ({sha[:12]})",
            hint="check the migrations folder path relative to the repository root",
        )
    with tempfile.TemporaryDirectory(prefix="opsflows-ref-") as tmp:
        with tempfile.TemporaryFile() as raw:
            raw.write(archive.stdout)
            raw.seek(0)
            with tarfile.open(fileobj=raw) as tar:
                tar.extractall(tmp, filter="data")
        yield Path(tmp) / relative
