"""Every alert rule, built from the runbook's thresholds (see :mod:`decisions.alert_rules`)."""

from __future__ import annotations

from decisions.alert_catalog_data import _g, data_rules
from decisions.alert_labels import (
    CONNECTION_POOL_EXHAUSTED,
    DISK_FULL,
    MEMORY_LEAK,
    ONE_POD_DOWN,
    SERVICE_DOWN,
    TRAFFIC_SPIKE,
    Rule,
)
from opsflows.thresholds import THRESHOLDS, Thresholds


def error_ratio(window: str = "1m") -> str:
    """5xx share of ``/`` requests by env (as ``tasks.metrics.error_rate_query``)."""
    sel = 'job="web-app", path="/"'
    return (
        f'sum by (env) (rate(http_requests_total{{{sel}, status=~"5.."}}[{window}]))\n'
        f"  / sum by (env) (rate(http_requests_total{{{sel}}}[{window}]))"
    )


def p95_latency(window: str = "1m") -> str:
    """p95 latency of ``/`` by env (as ``tasks.metrics.p95_latency_query``)."""
    return (
        "histogram_quantile(0.95, sum by (env, le) (\n"
        f'  rate(http_request_duration_seconds_bucket{{job="web-app", path="/"}}[{window}])))'
    )


def rules(t: Thresholds = THRESHOLDS) -> tuple[Rule, ...]:
    """Every alert rule for thresholds ``t``."""
    return (
        # -- the web app (each environment) ------------------------------------------------
        Rule(
            "web-app",
            "ServiceDown",
            'min by (env) (probe_success{job="blackbox-http"}) == 0\n'
            'or min by (env) (up{job="web-app"}) == 0',
            60,
            "a single failed probe (a pod restarting, a GC pause) does not page; a minute of "
            "failures does, well inside the runbook's 5-minute detect-and-respond goal",
            "P1",
            SERVICE_DOWN,
            "web-app in {{ $labels.env }} is down (health probe failing or not scraped)",
            keep_s=120,
            why_keep=(
                "a crash-looping app answers for seconds between restarts: it is back when it has "
                "answered for two minutes, and until then it stays one alert, not a page per "
                "restart"
            ),
        ),
        Rule(
            "web-app",
            "HighErrorRate",
            f"({error_ratio()})\n  >= {_g(t.error_rate_page)}",
            120,
            "two minutes of 1-minute rates: a sustained failure, not one burst; paging within "
            "the runbook's 15 minutes for P2",
            "P2",
            SERVICE_DOWN,
            "{{ $value | humanizePercentage }} of requests fail in {{ $labels.env }}",
            keep_s=300,
            why_keep=(
                f"a 1-minute error rate hovering at {_g(t.error_rate_page * 100)}% crosses it back "
                "and forth; five minutes below is a recovery, and the group does not resolve and "
                "page again in between"
            ),
        ),
        Rule(
            "web-app",
            "HighErrorRate",
            f"({error_ratio()})\n  > {_g(t.error_rate)} < {_g(t.error_rate_page)}",
            300,
            "P3 is an email within the hour: five minutes waits out short bursts of errors",
            "P3",
            SERVICE_DOWN,
            "{{ $value | humanizePercentage }} of requests fail in {{ $labels.env }}",
            keep_s=300,
            why_keep=(
                f"a 1-minute error rate hovering at {_g(t.error_rate * 100)}% crosses it back and "
                "forth; an e-mail per crossing helps nobody, five minutes below is a recovery"
            ),
        ),
        Rule(
            "web-app",
            "HighLatencyP95",
            f"{p95_latency()}\n  > {_g(t.p95_latency_s)}",
            120,
            "two minutes of 1-minute p95s: one slow batch of requests does not page",
            "P2",
            SERVICE_DOWN,
            "p95 latency in {{ $labels.env }} is {{ $value | humanizeDuration }}",
            keep_s=300,
            why_keep=(
                "a 1-minute p95 swings with each slow batch of requests; five minutes below "
                f"{_g(t.p95_latency_s)} s is a recovery, not a lull between slow batches"
            ),
        ),
        Rule(
            "web-app",
            "RequestQueueHigh",
            f'max by (env) (sampleapp_request_queue{{job="web-app"}}) > {t.request_queue}',
            60,
            "a queue above 1000 drains in seconds or not at all: a minute tells them apart",
            "P2",
            TRAFFIC_SPIKE,
            "{{ $value }} requests waiting in {{ $labels.env }}",
            keep_s=120,
            why_keep="a queue that drains and fills again within two minutes is the same spike",
        ),
        Rule(
            "web-app",
            "PodCpuHigh",
            f'max by (env) (sampleapp_cpu_utilization_ratio{{job="web-app"}}) > {_g(t.cpu)}',
            300,
            "CPU is spiky; five minutes above 80% of the limit is load, not a spike",
            "P2",
            TRAFFIC_SPIKE,
            "a pod in {{ $labels.env }} uses {{ $value | humanizePercentage }} of its CPU",
            keep_s=300,
            why_keep=(
                f"CPU is spiky both ways: a dip below {_g(t.cpu * 100)}% does not end the load"
            ),
        ),
        Rule(
            "web-app",
            "OnePodDown",
            'max by (env) (sampleapp_unready_pods{job="web-app"}) > 0\n'
            'and on (env) sum by (env) (sampleapp_ready_pods{job="web-app"}) > 0',
            120,
            "a rollout's new pod is unready for seconds; two minutes is a pod that does not "
            "come back while the others still serve",
            "P3",
            ONE_POD_DOWN,
            "{{ $value }} pod(s) not ready in {{ $labels.env }}; the others still serve",
            keep_s=300,
            why_keep=(
                "a crash-looping pod is Ready for seconds between restarts; five minutes Ready is "
                "a pod that came back"
            ),
        ),
        Rule(
            "web-app",
            "DbPoolExhausted",
            'max by (env) (sampleapp_db_pool_in_use{job="web-app"}\n'
            '  / sampleapp_db_pool_size{job="web-app"}) >= 1',
            60,
            "a full pool for a minute means requests wait for connections (the runbook's "
            "'connection refused' errors), not a momentary peak",
            "P2",
            CONNECTION_POOL_EXHAUSTED,
            "the DB connection pool in {{ $labels.env }} is exhausted",
            keep_s=120,
            why_keep=(
                "a full pool frees a connection now and then; two minutes with room is a recovery"
            ),
        ),
        Rule(
            "web-app",
            "PodMemoryHigh",
            'max by (env) (sampleapp_memory_bytes{job="web-app"}\n'
            f'  / sampleapp_memory_limit_bytes{{job="web-app"}}) > {_g(t.memory)}',
            120,
            "a pod's memory only climbs past 85% of its limit and stays there when it leaks; "
            "two minutes rules out one large request being served",
            "P2",
            MEMORY_LEAK,
            "a pod in {{ $labels.env }} uses {{ $value | humanizePercentage }} of its memory limit",
            keep_s=120,
            why_keep=(
                "a leaking pod frees nothing; a restart drops its series for a scrape, which is "
                "not yet a recovery"
            ),
        ),
        Rule(
            "web-app",
            "VolumeFull",
            'max by (env) (sampleapp_volume_used_bytes{job="web-app"}\n'
            f'  / sampleapp_volume_size_bytes{{job="web-app"}}) > {_g(t.disk)}',
            120,
            "a burst of uploads that is cleaned at once does not page; a volume that stays "
            "full does",
            "P2",
            DISK_FULL,
            "the app volume in {{ $labels.env }} is {{ $value | humanizePercentage }} full",
            keep_s=120,
            why_keep=(
                "space is freed only by deleting files, but an app restart drops the series for a "
                "scrape or two: that is no recovery"
            ),
        ),
        # -- the machine (node_exporter) ---------------------------------------------------
        Rule(
            "host",
            "HostCpuHigh",
            # idle share of all CPU time: right however the kernel counts its ticks
            "1 - sum by (env, instance) (\n"
            '  rate(node_cpu_seconds_total{job="node", mode="idle"}[2m]))\n'
            '  / sum by (env, instance) (rate(node_cpu_seconds_total{job="node"}[2m]))\n'
            f"  > {_g(t.cpu)}",
            600,
            "builds, backups and restores use the CPU for minutes; ten minutes above 80% "
            "is a capacity problem",
            "P2",
            TRAFFIC_SPIKE,
            "CPU of {{ $labels.instance }} is {{ $value | humanizePercentage }} busy",
            host=True,
            keep_s=300,
            why_keep=(
                "a build pausing between steps does not end the load; five minutes below "
                f"{_g(t.cpu * 100)}% does"
            ),
        ),
        Rule(
            "host",
            "HostMemoryHigh",
            '1 - node_memory_MemAvailable_bytes{job="node"}\n'
            '  / node_memory_MemTotal_bytes{job="node"}\n'
            f"  > {_g(t.memory)}",
            300,
            "page cache and short jobs come and go; five minutes above 85% is a leak or a "
            "machine too small",
            "P2",
            MEMORY_LEAK,
            "memory of {{ $labels.instance }} is {{ $value | humanizePercentage }} used",
            host=True,
            keep_s=300,
            why_keep=(
                f"page cache frees and fills in waves; five minutes below {_g(t.memory * 100)}% is "
                "a recovery"
            ),
        ),
        Rule(
            "host",
            "HostDiskFull",
            '1 - node_filesystem_avail_bytes{job="node", fstype!~"tmpfs|ramfs|squashfs"}\n'
            '  / node_filesystem_size_bytes{job="node", fstype!~"tmpfs|ramfs|squashfs"}\n'
            f"  > {_g(t.disk)}",
            300,
            "a dump or a restore fills and frees space within minutes; five minutes is not "
            "going away",
            "P2",
            DISK_FULL,
            "{{ $labels.mountpoint }} on {{ $labels.instance }} is "
            "{{ $value | humanizePercentage }} full",
            host=True,
            keep_s=120,
            why_keep=(
                "freed space is a real recovery, but a node_exporter restart drops the series for "
                "a scrape or two"
            ),
        ),
        *data_rules(t),
    )
