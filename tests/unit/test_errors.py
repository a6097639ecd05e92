"""The error tree: classification, hints, scrubbing of secret values."""

from __future__ import annotations

import pytest

from opsflows import errors
from opsflows.retry import _is_transient


@pytest.mark.parametrize(
    ("cls", "transient"),
    [
        (errors.ConfigurationError, False),
        (errors.AuthenticationError, False),
        (errors.NotFoundError, False),
        (errors.ConflictError, False),
        (errors.GateRejected, False),
        (errors.VerificationFailed, False),
        (errors.BackupMissing, False),
        (errors.ServiceUnavailable, True),
        (errors.Stalled, True),
        (errors.Throttled, True),
    ],
)
def test_every_class_is_permanent_or_transient(cls: type[errors.OpsError], transient: bool) -> None:
    exc = cls("something happened", hint="do this")
    assert isinstance(exc, errors.OpsError)
    assert isinstance(exc, errors.TransientError) is transient
    assert isinstance(exc, errors.PermanentError) is not transient
    assert _is_transient(exc) is transient
    assert "do this" in str(exc)


def test_plain_exceptions_are_not_retried() -> None:
    assert not _is_transient(RuntimeError("boom"))


def test_scrub_masks_known_values_url_passwords_and_fields() -> None:
    text = (
        "FATAL: password=hunter2 for postgresql://app:s3cr3t@db:5432/app "
        "token: abc.def and value TOPSECRET"
    )
    out = errors.scrub(text, "TOPSECRET")
    for secret in ("hunter2", "s3cr3t", "abc.def", "TOPSECRET"):
        assert secret not in out
    assert "postgresql://app:***@db" in out


def test_scrub_truncates_long_vendor_text() -> None:
    assert len(errors.scrub("x" * 5000)) < 400


def test_every_exception_the_project_defines_is_in_the_tree() -> None:
    """No bare ``Exception`` subclasses: callers and retries classify by the tree alone."""
    import ast
    import importlib
    import inspect
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    outside: list[str] = []
    for package in ("opsflows", "decisions", "blocks", "tasks", "flows", "deployments"):
        for path in sorted((repo / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
            if not names:
                continue
            module_name = ".".join(path.relative_to(repo).with_suffix("").parts)
            module = importlib.import_module(module_name)
            for name in names:
                cls = getattr(module, name, None)
                if inspect.isclass(cls) and issubclass(cls, BaseException):
                    if not issubclass(cls, errors.OpsError):
                        outside.append(f"{module_name}.{name}")
    assert not outside, f"exceptions outside opsflows/errors.py's tree: {outside}"
