"""moto in server mode for S3 and Secrets Manager, with one fidelity fix.

moto 5.2.5 moves the ``AWSCURRENT`` label in ``UpdateSecretVersionStage`` but not the secret's
default version, so a later ``GetSecretValue`` without ``VersionStage`` returns the old value.
Real Secrets Manager resolves the default through the label; we patch the backend here (the
launcher, not the product code). Product code reads with an explicit ``VersionStage`` anyway.

Run: ``python -m devstack.moto_server --host 127.0.0.1 --port 5055``.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    args = parser.parse_args(argv)
    patch_version_stage_move()
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
