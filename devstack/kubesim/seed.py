"""The cluster every run starts from (``--seed default``).

Namespaces ``default``, ``staging`` and ``production``; in each of the last two a Secret
``web-app-db`` and a Deployment ``web-app`` (2 replicas, container ``web`` running
``registry.local/web-app:1.0.0``, its database password taken from the Secret), already fully
rolled out: ReplicaSet revision 1 and two Ready pods. RBAC as a clean cluster has it
(``rbac.baseline``): a ``deployer`` ServiceAccount bound to its Role in both namespaces, the
members of ``policy/roles.yaml`` bound to their policy role's ClusterRole there, and only
``system:masters`` bound cluster-wide.
"""

from __future__ import annotations

from typing import Any

from devstack.kubesim.controller import SimConfig, reconcile
from devstack.kubesim.kinds import DEPLOYMENTS, NAMESPACES, SECRETS
from devstack.kubesim.rbac import baseline
from devstack.kubesim.registry import Registry

SEED_NAMESPACES = ("staging", "production")
APP_NAME = "web-app"
APP_IMAGE = "registry.local/web-app:1.0.0"
DB_SECRET = "web-app-db"


def web_app_deployment(
    name: str = APP_NAME, image: str = APP_IMAGE, replicas: int = 2
) -> dict[str, Any]:
    """The sample app's Deployment manifest."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {
                                    "name": "DATABASE_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": DB_SECRET, "key": "password"}
                                    },
                                }
                            ],
                        }
                    ]
                },
            },
        },
    }


def seed_default(registry: Registry) -> None:
    """Create the default objects and roll them out instantly."""
    store = registry.store
    for namespace in ("default", *SEED_NAMESPACES):
        registry.create(NAMESPACES, "", {"metadata": {"name": namespace}})
    for namespace in SEED_NAMESPACES:
        registry.create(
            SECRETS,
            namespace,
            {
                "metadata": {"name": DB_SECRET, "labels": {"app": APP_NAME}},
                "stringData": {"username": "web_app", "password": "kubesim-seed-password"},
            },
        )
        registry.create(DEPLOYMENTS, namespace, web_app_deployment())
    for rtype, namespace, body in baseline(SEED_NAMESPACES):
        registry.create(rtype, namespace, body)
    reconcile(store, SimConfig(pod_start_seconds=0.0), store.time)
