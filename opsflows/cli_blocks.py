"""Loading a saved block for a command-line tool: a clear error instead of a traceback."""

from __future__ import annotations

from typing import Any, TypeVar

from opsflows.errors import ConfigurationError, OpsError, scrub

B = TypeVar("B")


def load_for_cli(cls: type[B], name: str) -> B:
    """The saved block ``name`` of ``cls`` from the Prefect API.

    Raises:
        ConfigurationError: the block is missing (``load_block``'s own error), or the Prefect
            API cannot be reached or answered with an error (scrubbed, with what to check).
    """
    from procedures.operation import load_block

    try:
        block: Any = load_block(cls, name)  # type: ignore[type-var]
    except OpsError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreachable API must not print a traceback
        slug = getattr(cls, "get_block_type_slug", lambda: cls.__name__)()
        raise ConfigurationError(
            f"cannot load block {slug}/{name} from the Prefect API "
            f"({type(exc).__name__}: {scrub(str(exc))})",
            hint="is the Prefect server up (locally: `make up`) and PREFECT_API_URL set to it?",
        ) from exc
    return block  # type: ignore[no-any-return]
