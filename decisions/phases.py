"""Where a backup's or a restore's time went, phase by phase (pure).

A streamed backup overlaps its stages (pg_dump writes while zstd compresses while parts
upload), so each phase says when it started (seconds after the run's start) and how long it
took from start to end; a phase measured as busy time inside a stream (the SHA-256, the
part uploads added up, a tool's CPU time) says so in its ``how``. The same breakdown goes
to the run's log, its artifact, its operation-log entry and the benchmarks' JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: How a phase was measured.
WALL = "wall"  # from its start to its end
BUSY = "busy"  # time spent in it, added up (it overlaps others)
CPU = "cpu"  # CPU seconds of a tool (user + system)


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase: ``seconds`` measured as ``how``, starting ``start_s`` after the run."""

    name: str
    seconds: float
    start_s: float = 0.0
    how: str = WALL
    detail: str = ""

    def __post_init__(self) -> None:
        if self.how not in (WALL, BUSY, CPU):
            raise ValueError(f"phase {self.name}: unknown measure {self.how!r}")
        if self.seconds < 0 or self.start_s < 0:
            raise ValueError(f"phase {self.name}: negative time")


@dataclass(frozen=True, slots=True)
class Breakdown:
    """The phases of one run and its total wall time."""

    phases: tuple[Phase, ...]
    total_s: float

    @classmethod
    def of(cls, phases: Iterable[Phase], total_s: float) -> Breakdown:
        return cls(tuple(sorted(phases, key=lambda p: (p.start_s, p.name))), total_s)

    def seconds(self) -> dict[str, float]:
        """Phase name -> seconds (3 decimals), for JSON and the operation log."""
        return {p.name: round(p.seconds, 3) for p in self.phases}

    def unaccounted_s(self) -> float:
        """Wall time of the run no wall phase covers (Prefect, blocks, checks)."""
        spans = sorted(
            (p.start_s, p.start_s + p.seconds) for p in self.phases if p.how == WALL and p.seconds
        )
        covered, end = 0.0, 0.0
        for start, stop in spans:
            if stop <= end:
                continue
            covered += stop - max(start, end)
            end = stop
        return max(0.0, self.total_s - covered)

    def lines(self) -> list[str]:
        """One line per phase, for the run's log."""
        out = [
            f"{p.name}: {p.seconds:.2f} s {p.how} from +{p.start_s:.2f} s"
            + (f" ({p.detail})" if p.detail else "")
            for p in self.phases
        ]
        out.append(
            f"total {self.total_s:.2f} s, of which {self.unaccounted_s():.2f} s outside the phases"
        )
        return out

    def markdown(self, title: str) -> str:
        """A table for the run's artifact."""
        rows = [
            f"| {p.name} | +{p.start_s:.2f} | {p.seconds:.2f} | {p.how} | "
            f"{_share(p.seconds, self.total_s)} | {p.detail.replace('|', chr(92) + '|')} |"
            for p in self.phases
        ]
        return "\n".join(
            [
                f"# {title}",
                "",
                "Phases overlap (the dump streams through compression into the upload); "
                "*wall* is start to end, *busy* is time spent in it added up, *cpu* is the "
                "tool's CPU time.",
                "",
                "| phase | starts at (s) | seconds | measured | of total | detail |",
                "|---|---|---|---|---|---|",
                *rows,
                f"| outside the phases | | {self.unaccounted_s():.2f} | wall | "
                f"{_share(self.unaccounted_s(), self.total_s)} | Prefect, blocks, checks |",
                f"| **total** | | **{self.total_s:.2f}** | wall | 100% | |",
            ]
        )


def _share(seconds: float, total_s: float) -> str:
    return f"{100 * seconds / total_s:.0f}%" if total_s > 0 else "—"
