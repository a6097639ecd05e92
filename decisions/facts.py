"""What read-only checks return: typed facts about a database and a credential's consumers."""

from dataclasses import dataclass

from decisions.records import Record


@dataclass(frozen=True)
class DatabaseFacts(Record):
    """A database the role logged in to: server version, size, connections now."""

    server_version: str
    size_bytes: int
    connections: int


@dataclass(frozen=True)
class ConsumerState(Record):
    """Whether an environment's Secret and the Deployments using it run on a credential."""

    environment: str
    secret: bool
    deployments: tuple[str, ...]
    switched: bool
