"""What the rollout steps return: typed values instead of dictionaries read by string key.

They are frozen so a recorded rollback target cannot change under the run that keeps it;
``as_dict`` gives the JSON shape the operation log, artifacts and flow results carry.
"""

from dataclasses import dataclass
from datetime import datetime

from decisions.records import Record as _Record


@dataclass(frozen=True)
class Release(_Record):
    """An environment's current revision, image and replica count: a rollback target."""

    environment: str
    revision: int
    image: str
    replicas: int

    def __str__(self) -> str:
        return f"{self.image} (rev {self.revision})"


@dataclass(frozen=True)
class RevisionRecord(_Record):
    """One row of the rollout history (``kubectl rollout history``)."""

    revision: int
    image: str
    replicaset: str
    replicas: int
    #: When its ReplicaSet was created (a rollback reuses an old one: see ``reused``).
    created_at: datetime | None = None
    #: The revisions this ReplicaSet had before a rollback brought it back
    #: (``deployment.kubernetes.io/revision-history``); empty: never rolled back to.
    earlier_revisions: tuple[int, ...] = ()

    @property
    def reused(self) -> bool:
        """A rollback brought this ReplicaSet back (it is not a new deploy)."""
        return bool(self.earlier_revisions)


@dataclass(frozen=True)
class ImageSet(_Record):
    """The image a Deployment was pointed at, and the generation that change produced."""

    environment: str
    image: str
    generation: int | None


@dataclass(frozen=True)
class RolloutResult(_Record):
    """A finished rollout: how long it took and the controller's last message."""

    environment: str
    seconds: float
    message: str


@dataclass(frozen=True)
class Rollback(_Record):
    """A ``rollout undo``: from which revision to which, and whether anything changed."""

    environment: str
    from_revision: int
    to_revision: int
    image: str
    skipped: bool


@dataclass(frozen=True)
class Restart(_Record):
    """A ``rollout restart``: the ``restartedAt`` stamp put on the pod template."""

    environment: str
    restarted_at: str


@dataclass(frozen=True)
class Scale(_Record):
    """A ``kubectl scale``: the replica count before and after."""

    environment: str
    previous: int
    replicas: int
