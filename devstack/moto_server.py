"""moto in server mode for S3 and Secrets Manager, with two fidelity fixes.

moto 5.2.5 moves the ``AWSCURRENT`` label in ``UpdateSecretVersionStage`` but not the secret's
default version, so a later ``GetSecretValue`` without ``VersionStage`` returns the old value.
Real Secrets Manager resolves the default through the label; we patch the backend here (the
launcher, not the product code). Product code reads with an explicit ``VersionStage`` anyway.

moto 5.2.5's ``CopyObject`` copies a checksum's value but not its type: the copy of a
multipart object then reports its composite CRC32 (a checksum of the parts' checksums) as
the CRC32 of the whole object, and every SDK that validates downloads rejects it. Real S3
copies the checksum as it is, composite included; so does the patched backend.

moto has no clock a client can set, and Secrets Manager lets nobody write a secret's dates,
so the launcher adds one devstack-only route, ``POST /moto-api/opsflows/secret-dates`` with
``{"name": ..., "region": ..., "last_rotated": epoch, "last_changed": epoch, "created": epoch}``
(any subset of the dates): it sets the dates the backend keeps, which ``DescribeSecret`` and
``ListSecrets`` then report, as if the secret had been rotated (or changed) back then. The
access audit's tests use it to make a secret 40 days overdue.

Run: ``python -m devstack.moto_server --host 127.0.0.1 --port 5055``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.secretsmanager.models import SecretsManagerBackend


def patch_version_stage_move() -> None:
    """Make ``update_secret_version_stage`` move the default version with AWSCURRENT."""
    original = SecretsManagerBackend.update_secret_version_stage
    if getattr(original, "_opsflows_patched", False):
        return

    def update_secret_version_stage(
        self: SecretsManagerBackend,
        secret_id: str,
        version_stage: str,
        remove_from_version_id: str,
        move_to_version_id: str,
    ) -> tuple[str, str]:
        result = original(
            self, secret_id, version_stage, remove_from_version_id, move_to_version_id
        )
        if version_stage == "AWSCURRENT" and move_to_version_id:
            secret: Any = self.secrets[secret_id]
            source = getattr(secret, "source", secret)
            source.set_default_version_id(move_to_version_id)
        return result

    update_secret_version_stage._opsflows_patched = True  # type: ignore[attr-defined]
    SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage  # type: ignore[method-assign]


def patch_copy_checksum_type() -> None:
    """Make ``copy_object`` keep the source's checksum type and part count with its value."""
    from moto.s3.models import S3Backend

    original = S3Backend.copy_object
    if getattr(original, "_opsflows_patched", False):
        return

    def copy_object(
        self: S3Backend, src_key: Any, dest_bucket_name: str, dest_key_name: str, **kw: Any
    ) -> None:
        original(self, src_key, dest_bucket_name, dest_key_name, **kw)
        copied: Any = self.get_bucket(dest_bucket_name).keys.get(dest_key_name)
        if copied is not None and copied.checksum_value == src_key.checksum_value:
            copied.checksum_type = src_key.checksum_type
            copied.checksum_parts = src_key.checksum_parts

    copy_object._opsflows_patched = True  # type: ignore[attr-defined]
    S3Backend.copy_object = copy_object  # type: ignore[method-assign,assignment]


def set_secret_dates(request: Any, full_url: str, headers: Any) -> tuple[int, dict[str, str], str]:
    """``POST /moto-api/opsflows/secret-dates``: backdate a secret (see the module docstring)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.secretsmanager.models import secretsmanager_backends

    if request.method != "POST":
        return 405, {}, json.dumps({"error": "POST {name, region, last_rotated, ...}"})
    try:
        data = json.loads(request.data or b"{}")
        backend = secretsmanager_backends[DEFAULT_ACCOUNT_ID][data.get("region", "us-east-1")]
        secret: Any = backend.secrets[data["name"]]
    except (ValueError, KeyError) as exc:
        return 404, {}, json.dumps({"error": f"no such secret or bad body: {exc}"})
    fields = {
        "last_rotated": "last_rotation_date",
        "last_changed": "last_changed_date",
        "created": "created_date",
    }
    for key, attribute in fields.items():
        if key in data:
            setattr(secret, attribute, int(data[key]))
    if "last_rotated" in data:
        secret.rotation_requested = True  # DescribeSecret reports LastRotatedDate only then
    return 200, {}, json.dumps({"name": data["name"], "set": sorted(set(data) & set(fields))})


def add_admin_routes() -> None:
    """Register the devstack's own moto-api route (before the server builds its URL map)."""
    from moto.moto_api._internal import urls

    urls.url_paths["{0}/moto-api/opsflows/secret-dates"] = set_secret_dates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    args = parser.parse_args(argv)
    patch_version_stage_move()
    patch_copy_checksum_type()
    add_admin_routes()
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"moto listening on http://{args.host}:{args.port}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
