"""Save the blocks and concurrency limits that point the runbooks at the local stack.

Run with the stack's environment exported (``opsflows bootstrap`` does that), because
Prefect reads ``PREFECT_API_URL`` when it is imported.
"""

from __future__ import annotations

import json
from typing import Any

from devstack import postgres
from devstack.stack import (
    APP_DB_SECRET,
    AWS_REGION,
    BACKUP_BUCKET,
    BACKUP_PREFIX,
    MOTO_KEYS,
    StackInfo,
)

#: Strict global concurrency limits: one change per environment at a time (deploys and
#: migrations of an environment share its limit).
#: The Secret block the CI webhook receiver verifies signatures with.
WEBHOOK_SECRET_BLOCK = "webhook-secret"
#: The Secret block holding the bearer token Alertmanager sends with every alert (the alert
#: receiver compares it; the same value as StackInfo.alertmanager_token_file).
ALERTMANAGER_TOKEN_BLOCK = "alertmanager-webhook-token"
#: Notification channels saved as custom webhooks into the sink (``/_sink/<name>``): the
#: severity routes' page and notify, #incidents and the escalation levels.
SINK_CHANNELS = ("page", "notify", "incidents", "page-secondary", "page-lead")
CONCURRENCY_LIMITS = ("change-staging", "change-production")
#: The stack's TLS endpoint in the certificate inventory (renew-certificate's ``endpoint``).
DEVSTACK_TLS_ENDPOINT = "devstack"


def current_app_credential(info: StackInfo, passwords: dict[str, str]) -> tuple[str, str]:
    """The app credential at AWSCURRENT (a rotation may have changed it since ``up``)."""
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client(
        "secretsmanager",
        endpoint_url=info.aws_endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        response = client.get_secret_value(SecretId=APP_DB_SECRET, VersionStage="AWSCURRENT")
        current = json.loads(response["SecretString"])
        return str(current["username"]), str(current["password"])
    except (ClientError, ValueError, KeyError):
        return postgres.APP_ROLE, passwords[postgres.APP_ROLE]


def oncall_people() -> list[str]:
    """Everyone the on-call schedule may name: members of ``on-call`` and ``devops`` in the
    roles policy (the ``roles_file`` setting)."""
    from decisions.oncall_policy import LEAD_ROLES
    from procedures.approval_gate import load_policy

    roles = load_policy().roles
    return sorted({m for name in LEAD_ROLES if name in roles for m in roles[name].members})


def save_blocks(info: StackInfo, passwords: dict[str, str]) -> list[str]:
    """Register the block types and save every block the runbooks load; their names."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.blocks.system import Secret
    from prefect_aws import AwsCredentials

    from blocks import (
        BackupStore,
        CertificateAuthority,
        CertificateInventory,
        KubeEnvironment,
        NotificationRouting,
        PostgresTarget,
        TlsEndpoint,
    )
    from blocks.certificates import AUTHORITY, INVENTORY
    from opsflows.settings import get_settings
    from procedures import operation as common

    for cls in (
        BackupStore,
        CertificateAuthority,
        CertificateInventory,
        KubeEnvironment,
        NotificationRouting,
        PostgresTarget,
    ):
        cls.register_type_and_schema()

    saved: list[str] = []

    def save(block: Any, name: str) -> None:
        block.save(name, overwrite=True)
        saved.append(f"{block.get_block_type_slug()}/{name}")

    creds = AwsCredentials(
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_REGION,
        aws_client_parameters={"endpoint_url": info.aws_endpoint_url},
    )
    save(creds, common.AWS)
    save(
        BackupStore(bucket=BACKUP_BUCKET, prefix=BACKUP_PREFIX, aws_credentials=creds),
        common.BACKUPS,
    )
    pg = {"host": info.host, "port": info.postgres_port}
    app_user, app_password = current_app_credential(info, passwords)
    save(
        PostgresTarget(**pg, database=postgres.APP_DATABASE, user=app_user, password=app_password),
        common.APP_DB,
    )
    save(
        PostgresTarget(
            **pg,
            database=postgres.APP_DATABASE,
            user=postgres.ADMIN_USER,
            password=passwords["postgres"],
        ),
        common.APP_DB_ADMIN,
    )
    save(
        PostgresTarget(
            **pg,
            database=postgres.OPS_DATABASE,
            user=postgres.OPS_ROLE,
            password=passwords[postgres.OPS_ROLE],
        ),
        common.OPS_DB,
    )
    for env in ("staging", "production"):
        save(
            KubeEnvironment(
                environment=env,
                api_url=info.kube_url,
                namespace=env,
                deployment="web-app",
                service_url=info.app_url(env),
                prometheus_url=info.prometheus_url,
                alertmanager_url=info.alertmanager_url,
                verify_ssl=False,
            ),
            env,
        )
    for channel in SINK_CHANNELS:
        save(
            CustomWebhookNotificationBlock(
                name=f"devstack {channel}",
                url=f"{info.kube_url}/_sink/{channel}",
                json_data={"subject": "{{subject}}", "body": "{{body}}"},
                allow_private_urls=True,
            ),
            channel,
        )
    # One channel per person who can be on call or lead (`page-<name>`), for the on-call
    # schedule's `channels` (policy/oncall.yaml): the sink shows who was paged.
    for person in oncall_people():
        save(
            CustomWebhookNotificationBlock(
                name=f"devstack page {person}",
                url=f"{info.kube_url}/_sink/page-{person}",
                json_data={"subject": "{{subject}}", "body": "{{body}}"},
                allow_private_urls=True,
            ),
            f"page-{person}",
        )
    page, note = "custom-webhook/page", "custom-webhook/notify"
    routing = NotificationRouting(
        routes={"P1": [page, note], "P2": [page, note], "P3": [note], "P4": []},
        channels={
            "incidents": ["custom-webhook/incidents"],
            "secondary": ["custom-webhook/page-secondary"],
            "lead": ["custom-webhook/page-lead"],
        },
    )
    save(routing, common.ROUTING)
    # The stack's TLS endpoint, watched by certificate-check and renewed from the stack CA into
    # its production Secret (which the endpoint serves; devstack.tlsendpoint).
    settings = get_settings()
    endpoint = TlsEndpoint(
        name=DEVSTACK_TLS_ENDPOINT,
        url=info.tls_url,
        environment="production",
        secret=settings.tls_secret_name,
        hostnames=["localhost", "127.0.0.1"],
    )
    save(CertificateInventory(endpoints=[endpoint], ca_bundle=str(info.ca_cert_file)), INVENTORY)
    save(
        CertificateAuthority(cert_file=str(info.ca_cert_file), key_file=str(info.ca_key_file)),
        AUTHORITY,
    )
    # The CI webhook's HMAC secret (deployments/webhook.py reads it; never printed).
    save(Secret(value=passwords["webhook"]), WEBHOOK_SECRET_BLOCK)
    save(Secret(value=passwords["alertmanager_webhook"]), ALERTMANAGER_TOKEN_BLOCK)
    return saved


def create_concurrency_limits() -> list[str]:
    """Create (or keep) one strict limit of 1 per environment; their names."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in CONCURRENCY_LIMITS:
            client.upsert_global_concurrency_limit_by_name(name, 1)
    return list(CONCURRENCY_LIMITS)


def bootstrap(info: StackInfo, passwords: dict[str, str]) -> dict[str, list[str]]:
    """Everything the local stack needs saved in Prefect."""
    from deployments import automations
    from opsflows.settings import get_settings

    saved = save_blocks(info, passwords)
    limits = create_concurrency_limits()
    automations.create_failure_automation()  # pages via custom-webhook/page, saved just above
    # Runs whose process died go silent; this marks them Crashed, which the one above pages on.
    automations.create_unresponsive_automation(get_settings().unresponsive_after_s)
    names = [automations.AUTOMATION_NAME, automations.UNRESPONSIVE_NAME]
    return {"blocks": saved, "limits": limits, "automations": names}
