"""A TLS endpoint for the certificate-expiry alerts: HTTPS with a self-signed certificate.

``devstack up`` issues the certificate (``openssl req -x509``, valid ``tls_cert_days``) unless
a valid one exists, and runs ``python -m devstack.tlsendpoint`` on the ``tls_port``. The
server reads the certificate again whenever its file changes, so a test can issue one that
expires in 3 days (:func:`issue`) and the blackbox probe sees it at its next probe::

    issue(info.tls_cert_file.parent, info.host, days=3)   # CertificateExpiry P2 fires

Every path answers ``200 ok``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import ssl
import subprocess
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"subjectAltName=DNS:{host},DNS:localhost,IP:127.0.0.1"
    return f"subjectAltName=IP:{host},DNS:localhost"


def issue(folder: Path, host: str, days: int) -> Path:
    """A fresh self-signed certificate for ``host`` valid ``days`` days; its path.

    The key (mode 0600) and the certificate are written beside each other and swapped in
    atomically, key first, so the server never pairs a new certificate with an old key.
    """
    if days < 1:
        raise ValueError("a certificate lasts at least a day")
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    key_tmp, cert_tmp = folder / f".{KEY_NAME}.tmp", folder / f".{CERT_NAME}.tmp"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key_tmp),
            "-out",
            str(cert_tmp),
            "-days",
            str(days),
            "-subj",
            "/CN=opsflows-devstack",
            "-addext",
            _san(host),
        ],
        check=True,
        capture_output=True,
    )
    key_tmp.chmod(0o600)
    cert_tmp.chmod(0o644)
    os.replace(key_tmp, folder / KEY_NAME)
    os.replace(cert_tmp, folder / CERT_NAME)
    return folder / CERT_NAME


def expires_at(cert: Path) -> datetime | None:
    """When ``cert`` expires (None when it cannot be read)."""
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-in", str(cert)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or "=" not in result.stdout:
        return None
    stamp = result.stdout.strip().split("=", 1)[1]
    return datetime.strptime(stamp, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def ensure(folder: Path, host: str, days: int) -> Path:
    """The certificate in ``folder``: kept while valid for over a day, else issued anew."""
    cert = folder / CERT_NAME
    until = expires_at(cert) if cert.exists() and (folder / KEY_NAME).exists() else None
    if until is not None and (until - datetime.now(UTC)).total_seconds() > 86400:
        return cert
    return issue(folder, host, days)


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
        stamp = cert.stat().st_mtime
        with self._lock:
            if self._context is None or stamp != self._stamp:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(cert, self.folder / KEY_NAME)
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
    args = parser.parse_args(argv)
    server = ReloadingTLSServer((args.host, args.port), args.cert_dir)
    server.context()  # fail at start, not at the first probe, when the files are bad
    server.serve_forever()


if __name__ == "__main__":
    main()
