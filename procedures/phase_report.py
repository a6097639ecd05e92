"""Where a backup's or a restore's time went: in the run's log and as its artifact."""

from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from decisions.phases import Breakdown


def publish_phases(breakdown: Breakdown, key: str, title: str) -> None:
    """Log one line per phase and show the table as the run's ``key`` artifact."""
    logger = get_run_logger()
    for line in breakdown.lines():
        logger.info("phase %s", line)
    create_markdown_artifact(
        breakdown.markdown(title),
        key=key,
        description="where the run's time went, phase by phase",
    )
