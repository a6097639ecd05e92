"""The base of the typed values steps return: frozen dataclasses with a JSON form."""

from dataclasses import asdict
from typing import Any


class Record:
    """Mixed into a frozen dataclass: ``as_dict`` for the op log, artifacts and flow results."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form (operation-log details, artifacts, flow results)."""
        return asdict(self)  # type: ignore[call-overload,no-any-return]
