"""The capacity report's charts and artifacts: a PNG per resource (history, the trend line
over the next 90 days, the threshold), stored in the backup bucket under
``reports/capacity/<date>/<resource>.png`` and shown as an image artifact through a presigned
URL (the UI's browser loads it from S3 directly), and the report's table artifact."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_image_artifact, create_table_artifact

from blocks.storage import BackupStore
from decisions.capacity import DAY_S, HORIZON_DAYS, Assessment
from opsflows import retry
from tasks.storage import aws_errors

TABLE_KEY = "capacity-report"
REPORT_PREFIX = "reports/capacity"
#: Presigned URLs live as long as S3 allows for a signature (7 days): the next weekly report
#: replaces them.
URL_TTL_S = 7 * 24 * 3600


def chart_key(date: str, resource: str) -> str:
    return f"{REPORT_PREFIX}/{date}/{resource}.png"


def render_png(a: Assessment, samples: Sequence[tuple[float, float]], now: float) -> bytes:
    """The chart of one resource as PNG bytes (x: days from now)."""
    # matplotlib takes seconds to import: only a run that draws pays for it, not every
    # process that imports the deployment catalog (serve, the webhook, prefect.yaml).
    import matplotlib

    matplotlib.use("Agg")  # no screen: before pyplot is imported
    import matplotlib.pyplot as plt

    r = a.resource
    scale = 100.0 if r.unit == "ratio" else (1 / 2**30 if r.unit == "bytes" else 1.0)
    label = {"ratio": "%", "bytes": "GiB", "rps": "req/s", "count": "connections"}[r.unit]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=90)
    try:
        xs = [(t - now) / DAY_S for t, _ in samples]
        ax.plot(xs, [v * scale for _, v in samples], lw=1, label="history")
        if a.trend_30d is not None:
            t = a.trend_30d
            start = xs[0] if xs else -30.0
            ax.plot(
                [start, HORIZON_DAYS],
                [t.value_in(start) * scale, t.value_in(HORIZON_DAYS) * scale],
                ls="--",
                label="trend (Theil-Sen, 30 days)",
            )
        limit = r.limit(a.capacity)
        if limit is not None:
            ax.axhline(limit * scale, color="red", lw=1, label="scaling threshold")
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("days from now")
        ax.set_ylabel(label)
        ax.set_title(f"{r.title}: {a.forecast}")
        ax.legend(loc="upper left", fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


@task(name="store a capacity chart", **retry.NETWORK)
def store_chart(store: BackupStore, date: str, resource: str, png: bytes) -> dict[str, str]:
    """Put the PNG in the bucket and show it in the run (image artifact); its key and URL."""
    key = chart_key(date, resource)
    client = store.s3_client()
    with aws_errors(f"store chart s3://{store.bucket}/{key}"):
        client.put_object(Bucket=store.bucket, Key=key, Body=png, ContentType="image/png")
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": store.bucket, "Key": key}, ExpiresIn=URL_TTL_S
        )
    create_image_artifact(
        image_url=url,
        key=f"capacity-{resource.replace('_', '-')}",
        description=f"Capacity of {resource} on {date}: s3://{store.bucket}/{key}",
    )
    return {"key": key, "url": url}


@task(name="publish capacity report", **retry.NETWORK)
def publish_table(rows: list[dict[str, str]], env: str) -> None:
    """The report's table (key ``capacity-report``), in the runbook's shape."""
    now = datetime.now(UTC)
    create_table_artifact(
        key=TABLE_KEY,
        table=rows,
        description=f"Capacity of {env} on {now:%Y-%m-%d %H:%M} UTC: current use, trends over "
        "7 and 30 days (Theil-Sen), days to the scaling threshold, the scaling plan's advice; "
        "`graph` opens the Prometheus query",
    )
