"""prefect.yaml's ``deployments:`` section, generated from the catalog (one source).

``deployments/catalog.py`` is where a deployment is declared; the ``deployments:`` section of
``prefect.yaml`` (what ``prefect deploy --all`` and workers use) is written from it, so the
two can never disagree. The rest of prefect.yaml (work pools, pull steps, schedule anchors)
is kept as written.

    python -m deployments.prefect_yaml          # rewrite prefect.yaml
    python -m deployments.prefect_yaml --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opsflows.settings import REPO_ROOT

PREFECT_YAML = REPO_ROOT / "prefect.yaml"
SECTION = "deployments:\n"
_SCHEDULE_ANCHOR = re.compile(r"&(\w+)\n\s+cron: \"([^\"]+)\"\n\s+timezone: (\S+)")


def _scalar(value: Any) -> str:
    """A YAML scalar: JSON for strings that need quoting, plain otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./-][A-Za-z0-9_ ./-]*", text) and text.strip() == text:
        return text
    return json.dumps(text)


def _schedule_anchors(template: str) -> dict[tuple[str, str], str]:
    return {(cron, tz): anchor for anchor, cron, tz in _SCHEDULE_ANCHOR.findall(template)}


def render_deployment(deployment: Any, anchors: dict[tuple[str, str], str]) -> str:
    """One entry of the section for a ``RunnerDeployment``."""
    lines = ["  - <<: *runbook", f"    name: {deployment.name}"]
    description = " ".join(str(deployment.description or "").split())
    lines.append("    description: >-")
    lines += textwrap.wrap(
        description,
        width=92,
        initial_indent=" " * 6,
        subsequent_indent=" " * 6,
        break_on_hyphens=False,
    )
    lines.append(f"    entrypoint: {deployment.entrypoint}")
    lines.append(f"    tags: [{', '.join(deployment.tags or [])}]")
    if deployment.schedules:
        lines.append("    schedules:")
        for item in deployment.schedules:
            key = (item.schedule.cron, item.schedule.timezone or "UTC")
            if key in anchors:
                lines.append(f"      - *{anchors[key]}")
            else:
                lines.append(f"      - cron: {json.dumps(key[0])}")
                lines.append(f"        timezone: {key[1]}")
    limit = deployment.concurrency_limit
    limit = getattr(limit, "limit", limit)
    if limit is not None:
        if limit != 1:
            raise ValueError(f"{deployment.name}: only concurrency_limit=1 has an anchor")
        lines.append("    concurrency_limit: *one_at_a_time")
    if deployment.parameters:
        lines.append("    parameters:")
        lines += [f"      {k}: {_scalar(v)}" for k, v in sorted(deployment.parameters.items())]
    if deployment.triggers:
        lines.append("    triggers:")
        for trigger in deployment.triggers:
            body = trigger.model_dump(mode="json", exclude_unset=True)
            for events in ("expect", "after"):  # sets: their order changes with the hash seed
                if isinstance(body.get(events), list):
                    body[events] = sorted(body[events])
            lines.append(f"      - {json.dumps(body, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def render(template: str, deployments: Sequence[Any]) -> str:
    """``template`` with its ``deployments:`` section written from ``deployments``."""
    head, found, _ = template.partition(SECTION)
    if not found:
        raise ValueError("prefect.yaml has no top-level 'deployments:' section")
    anchors = _schedule_anchors(head)
    entries = [render_deployment(d, anchors) for d in deployments]
    return head + SECTION + "\n".join(entries)


def main(argv: Sequence[str] | None = None) -> int:
    from deployments.catalog import runner_deployments

    parser = argparse.ArgumentParser(prog="python -m deployments.prefect_yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 when out of date")
    parser.add_argument("--path", type=Path, default=PREFECT_YAML)
    args = parser.parse_args(argv)
    current = args.path.read_text()
    wanted = render(current, runner_deployments())
    if args.check:
        if current != wanted:
            print(f"{args.path} is out of date: run `python -m deployments.prefect_yaml`")
            return 1
        return 0
    args.path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
