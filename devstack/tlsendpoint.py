"""A TLS endpoint for the certificate runbooks and alerts: HTTPS with a certificate of the stack CA.

``devstack up`` makes the stack CA once (:func:`ensure_ca`: ``ca/ca.pem`` and ``ca/ca-key.pem``
of mode 0600 under the service dir, ECDSA P-256, 10 years, made with ``cryptography`` by
:mod:`tasks.pki`, the same code the ``renew-certificate`` runbook signs with), issues the
endpoint's certificate from it (valid ``tls_cert_days``, SAN for the host) unless a valid one
it signed exists, and runs ``python -m devstack.tlsendpoint`` on the ``tls_port``. The blackbox
exporter and the ``certificate-check`` runbook trust the CA certificate.

The server reads its certificate files again whenever the certificate file changes, so a test
can issue one that expires in 3 days (:func:`issue`) and the blackbox probe sees it at its
next probe::

    issue(info.tls_cert_file.parent, info.host, days=3)   # CertificateExpiry P2 fires

With ``--kube-url``, ``--namespace`` and ``--secret`` it also plays cert-manager's consumer (an
ingress mounting a TLS Secret): every ``--sync-s`` it reads the ``kubernetes.io/tls`` Secret
and, when its content changed since the last sync, writes ``tls.crt``/``tls.key`` to its
certificate files (a pair whose key does not match is ignored), which it then serves. A
Secret that is missing or unchanged leaves the files alone, so :func:`issue` still works.

Every path answers ``200 ok``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import socket
import ssl
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from opsflows.errors import ConfigurationError
from tasks import pki

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
CA_DIR = "ca"
CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
CA_COMMON_NAME = "opsflows devstack CA"
CA_DAYS = 3650
TLS_SECRET_TYPE = "kubernetes.io/tls"


def ca_files(ca_dir: Path) -> tuple[Path, Path]:
    """The CA's certificate and key files in ``ca_dir``."""
    return ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a 0600 temporary file swapped in atomically."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def ensure_ca(ca_dir: Path) -> Path:
    """The stack CA's certificate, made once (key mode 0600, certificate 0644); its path.

    A CA that exists is kept while it is valid, so certificates it signed stay trusted
    across ``devstack up``.
    """
    cert_file, key_file = ca_files(ca_dir)
    if cert_file.exists() and key_file.exists():
        try:
            pki.load_authority(cert_file.read_bytes(), key_file.read_bytes())
            return cert_file
        except ConfigurationError:
            pass  # unreadable or expired: a new one below
    ca_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    ca_dir.chmod(0o755)
    cert, key = pki.make_ca(CA_COMMON_NAME, CA_DAYS)
    _write_private(key_file, pki.key_pem(key))
    cert_file.write_bytes(pki.cert_pem(cert))
    cert_file.chmod(0o644)
    return cert_file


def _load_ca(ca_dir: Path) -> tuple[Any, pki.PrivateKey]:
    cert_file, key_file = ca_files(ca_dir)
    if not (cert_file.exists() and key_file.exists()):
        raise ConfigurationError(
            f"no stack CA in {ca_dir} ({CA_CERT_NAME}, {CA_KEY_NAME})",
            hint="run `opsflows devstack up`: it makes the CA",
        )
    return pki.load_authority(cert_file.read_bytes(), key_file.read_bytes())


def hostnames(host: str) -> list[str]:
    """What the endpoint's certificate is for: the host, localhost and 127.0.0.1."""
    return list(dict.fromkeys([host, "localhost", "127.0.0.1"]))


def write_pair(folder: Path, cert_data: bytes, key_data: bytes) -> Path:
    """Swap a certificate and its key into ``folder`` (key first, 0600); the cert's path.

    The server reloads when the certificate file changes; a key swapped in just before its
    certificate is never served with the old one (a mismatched pair is not loaded).
    """
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    _write_private(folder / KEY_NAME, key_data)
    cert_tmp = folder / f".{CERT_NAME}.tmp"
    cert_tmp.write_bytes(cert_data)
    cert_tmp.chmod(0o644)
    os.replace(cert_tmp, folder / CERT_NAME)
    return folder / CERT_NAME


def issue(folder: Path, host: str, days: int, ca_dir: Path | None = None) -> Path:
    """A fresh certificate for ``host`` valid ``days`` days, signed by the stack CA; its path.

    The CA is ``ca_dir``, by default the ``ca`` folder beside ``folder`` (where ``devstack up``
    makes it).
    """
    if days < 1:
        raise ValueError("a certificate lasts at least a day")
    ca_cert, ca_key = _load_ca(ca_dir or folder.parent / CA_DIR)
    cert, key = pki.issue_leaf(ca_cert, ca_key, hostnames(host), days)
    return write_pair(folder, pki.cert_pem(cert), pki.key_pem(key))


def expires_at(cert: Path) -> datetime | None:
    """When ``cert`` expires (None when it cannot be read)."""
    try:
        return pki.load_cert(cert.read_bytes()).not_valid_after_utc
    except (OSError, ConfigurationError):
        return None


def ensure(folder: Path, host: str, days: int, ca_dir: Path | None = None) -> Path:
    """The certificate in ``folder``: kept while valid for over a day and signed by the CA,
    else issued anew."""
    ca_dir = ca_dir or folder.parent / CA_DIR
    cert_file = folder / CERT_NAME
    if cert_file.exists() and (folder / KEY_NAME).exists():
        try:
            cert = pki.load_cert(cert_file.read_bytes())
            ca_cert = pki.load_cert(ca_files(ca_dir)[0].read_bytes())
            valid = cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=1)
            if valid and pki.signed_by(cert, ca_cert):
                return cert_file
        except (OSError, ConfigurationError):
            pass
    return issue(folder, host, days, ca_dir)


def _pair_matches(cert_data: bytes, key_data: bytes) -> bool:
    try:
        cert = pki.load_cert(cert_data)
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ConfigurationError, ValueError, TypeError):
        return False
    return bool(cert.public_key() == key.public_key())


class SecretSync(threading.Thread):
    """Copies a ``kubernetes.io/tls`` Secret to the certificate files when it changes."""

    def __init__(self, folder: Path, url: str, interval_s: float) -> None:
        super().__init__(name="secret-sync", daemon=True)
        self.folder, self.url, self.interval_s = folder, url, interval_s
        self.applied: str | None = None
        self._http: Any = None

    def run(self) -> None:
        import httpx

        # One client for the thread's life: a new one per poll rebuilt its TLS context
        # (the CA bundle) every interval, a steady few percent of a CPU for nothing.
        self._http = httpx.Client(timeout=5)
        while True:
            try:
                self.sync_once()
            except Exception as exc:  # noqa: BLE001 - the API may be down: try again later
                print(f"secret sync: {type(exc).__name__}", file=sys.stderr, flush=True)
            threading.Event().wait(self.interval_s)

    def sync_once(self) -> bool:
        """Apply the Secret when its content changed; whether the files were written."""
        import httpx

        response = (self._http or httpx).get(self.url, timeout=5)
        if response.status_code == 404:
            return False
        response.raise_for_status()
        secret = response.json()
        data = secret.get("data") or {}
        if secret.get("type") != TLS_SECRET_TYPE or not {"tls.crt", "tls.key"} <= set(data):
            return False
        digest = hashlib.sha256(f"{data['tls.crt']}.{data['tls.key']}".encode()).hexdigest()
        if digest == self.applied:
            return False
        cert_data, key_data = (base64.b64decode(data[k]) for k in ("tls.crt", "tls.key"))
        self.applied = digest
        if not _pair_matches(cert_data, key_data):
            print("secret sync: tls.crt and tls.key do not match; ignored", file=sys.stderr)
            return False
        write_pair(self.folder, cert_data, key_data)
        serial = pki.describe(pki.load_cert(cert_data)).serial
        print(f"secret sync: now serving serial {serial}", flush=True)
        return True


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ReloadingTLSServer(ThreadingHTTPServer):
    """Wraps each connection with a context built from the certificate files as they are now."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._context: ssl.SSLContext | None = None
        super().__init__(address, _Handler)

    def context(self) -> ssl.SSLContext:
        cert = self.folder / CERT_NAME
        stamp = cert.stat().st_mtime_ns
        with self._lock:
            if self._context is None or stamp != self._stamp:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                try:
                    context.load_cert_chain(cert, self.folder / KEY_NAME)
                except (ssl.SSLError, OSError):
                    if self._context is None:
                        raise
                    return self._context  # a pair mid-swap: serve the old one, retry next time
                self._context, self._stamp = context, stamp
            return self._context

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # the handshake happens in the handler thread: a client that never speaks TLS (a port
        # probe) must not stall the accept loop
        context = self.context()
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-handshake (a port probe) is not an error here


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.tlsendpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True, help="holds cert.pem, key.pem")
    parser.add_argument("--kube-url", help="Kubernetes API to read the TLS Secret from")
    parser.add_argument("--namespace", default="production")
    parser.add_argument("--secret", help="the kubernetes.io/tls Secret this endpoint serves")
    parser.add_argument("--sync-s", type=float, default=1.0, help="seconds between Secret reads")
    args = parser.parse_args(argv)
    server = ReloadingTLSServer((args.host, args.port), args.cert_dir)
    server.context()  # fail at start, not at the first probe, when the files are bad
    if args.kube_url and args.secret:
        url = f"{args.kube_url}/api/v1/namespaces/{args.namespace}/secrets/{args.secret}"
        SecretSync(args.cert_dir, url, args.sync_s).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
