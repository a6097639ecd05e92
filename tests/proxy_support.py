"""The scale-out guide's nginx (``docs/scale-out/nginx-prefect.conf``), rendered and running.

:func:`nginx_in_front_of` renders that very file (every ``@PLACEHOLDER@`` replaced), writes an
htpasswd file for two people (alice's hash salted SHA-1 made here, bob's ``openssl passwd -6``
as the guide says) and a certificate of a throwaway CA, and runs Debian's nginx with it on
free ports, unprivileged (the stack's OS user when we are root). Shared by the proxy's
integration test and the browser test of the UI behind it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack import postgres, procs
from opsflows.settings import REPO_ROOT, Settings
from tasks import pki

CONF = REPO_ROOT / "docs" / "scale-out" / "nginx-prefect.conf"
PEOPLE = {"alice": "alice-correct-horse", "bob": "bob-battery-staple"}
REALM = 'Basic realm="opsflows Prefect"'
INSTALL_HINT = (
    "nginx is not installed: run `make deps` (as root it apt-get installs Debian's nginx), "
    "or `apt-get install -y nginx`"
)
#: The main context around the site file, as Debian's /etc/nginx/nginx.conf includes
#: conf.d/*.conf; temp paths inside the test's directory, so nginx needs no root.
MAIN = """\
worker_processes 1;
events {{ worker_connections 128; }}
http {{
    access_log {tmp}/default-access.log;
    client_body_temp_path {tmp}/temp/body;
    proxy_temp_path {tmp}/temp/proxy;
    fastcgi_temp_path {tmp}/temp/fastcgi;
    uwsgi_temp_path {tmp}/temp/uwsgi;
    scgi_temp_path {tmp}/temp/scgi;
    include {site};
}}
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def ssha(password: str) -> str:
    """nginx's ``{SSHA}`` scheme: base64(sha1(password + salt) + salt)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def sha512_crypt(password: str) -> str:
    """``openssl passwd -6``: the guide's way (SHA-512 crypt, which nginx hands to crypt(3))."""
    done = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def htpasswd(people: dict[str, str]) -> str:
    hashers = (ssha, sha512_crypt)
    lines = [f"{name}:{hashers[i % 2](pw)}" for i, (name, pw) in enumerate(people.items())]
    return "\n".join(lines) + "\n"


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with every ``@NAME@`` replaced; each must have a value, each value a use."""
    wanted = set(re.findall(r"@([A-Z_]+)@", template))
    assert wanted == set(values), f"the file's placeholders {sorted(wanted)} != {sorted(values)}"
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], template)


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        pytest.fail(INSTALL_HINT)
    return found


def two_free_ports() -> tuple[int, int]:
    first = procs.free_port()
    second = procs.free_port()
    while second == first:
        second = procs.free_port()
    return first, second


@dataclass(frozen=True)
class Proxy:
    url: str  # https, where people log in
    http_url: str  # plain http: redirects only
    ca_file: Path
    htpasswd: Path
    access_log: Path
    pid_file: Path

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, person: str | None = None, password: str | None = None) -> httpx.Client:
        headers = {}
        if person is not None:
            secret = PEOPLE[person] if password is None else password
            headers["Authorization"] = basic(person, secret)
        return httpx.Client(base_url=self.url, verify=self.tls(), headers=headers, timeout=15)

    def log_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines()


@contextmanager
def nginx_in_front_of(upstream: str, authorization: str) -> Iterator[Proxy]:
    """Debian's nginx running the rendered guide's file, proxying to ``upstream``."""
    binary = nginx_binary()
    user = Settings().os_user if os.geteuid() == 0 else None
    if user:
        postgres.ensure_os_user(user)
    tmp = Path(tempfile.mkdtemp(prefix="opsflows-nginx-"))
    tmp.chmod(0o755)  # the unprivileged user reaches its files inside
    try:
        ca_cert, ca_key = pki.make_ca("opsflows scale-out test CA", days=1)
        cert, key = pki.issue_leaf(ca_cert, ca_key, ["127.0.0.1"], days=1)
        (tmp / "ca.pem").write_bytes(pki.cert_pem(ca_cert))
        (tmp / "cert.pem").write_bytes(pki.cert_pem(cert))
        (tmp / "key.pem").write_bytes(pki.key_pem(key))
        (tmp / "htpasswd").write_text(htpasswd(PEOPLE))
        (tmp / "temp").mkdir()
        https_port, http_port = two_free_ports()
        site = tmp / "prefect.conf"
        values = {
            "SERVER_NAME": "127.0.0.1",
            "LISTEN_HTTPS": f"127.0.0.1:{https_port}",
            "LISTEN_HTTP": f"127.0.0.1:{http_port}",
            "TLS_CERT": str(tmp / "cert.pem"),
            "TLS_KEY": str(tmp / "key.pem"),
            "HTPASSWD": str(tmp / "htpasswd"),
            "ACCESS_LOG": str(tmp / "prefect-access.log"),
            "UPSTREAM": upstream,
            "PREFECT_AUTHORIZATION": authorization,
        }
        site.write_text(render(CONF.read_text(), values))
        (tmp / "nginx.conf").write_text(MAIN.format(tmp=tmp, site=site))
        for secret in (site, tmp / "key.pem", tmp / "htpasswd"):
            secret.chmod(0o600)
        if user:
            postgres.chown_tree(tmp, user)
        daemon = f"daemon off; pid {tmp}/nginx.pid; error_log stderr;"
        argv = [binary, "-e", "stderr", "-p", str(tmp), "-c", str(tmp / "nginx.conf")]
        check = subprocess.run(
            procs.as_user(user, [*argv, "-t", "-g", daemon]), capture_output=True, text=True
        )
        assert check.returncode == 0, f"nginx -t refused the rendered file:\n{check.stderr}"
        log = tmp / "nginx.log"
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/bin")}
        with procs.background(procs.as_user(user, [*argv, "-g", daemon]), env, log) as proc:

            def listening() -> bool:
                assert proc.poll() is None, f"nginx exited:\n{procs.tail(log)}"
                return procs.port_open("127.0.0.1", https_port) and procs.port_open(
                    "127.0.0.1", http_port
                )

            assert procs.wait_until(listening, 20), f"nginx not listening:\n{procs.tail(log)}"
            yield Proxy(
                url=f"https://127.0.0.1:{https_port}",
                http_url=f"http://127.0.0.1:{http_port}",
                ca_file=tmp / "ca.pem",
                htpasswd=tmp / "htpasswd",
                access_log=tmp / "prefect-access.log",
                pid_file=tmp / "nginx.pid",
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def refused_by_nginx(response: httpx.Response) -> None:
    """A 401 from nginx itself (its login challenge), not from the Prefect server."""
    assert response.status_code == 401, response.text[:300]
    assert response.headers.get("www-authenticate") == REALM
    assert response.headers.get("server", "").startswith("nginx")
    assert "exception_message" not in response.text  # the Prefect server's 401 body
