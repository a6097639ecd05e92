"""What the rotation steps' integration tests share besides their fixtures
(``tests/integration/conftest.py``): the rotation token and a credential for a test's role."""

from __future__ import annotations

from pydantic import SecretStr

from devstack.stack import StackInfo
from tasks import rotation as t

#: The rotation token (a Secrets Manager version id) the tests write with.
TOKEN = "7d5b0e9c-0000-4000-8000-00000000000a"


def credential(stack: StackInfo, database: str, role: str, password: str) -> t.DbCredential:
    return t.DbCredential(
        username=role, host=stack.host, port=stack.postgres_port, dbname=database,
        password=SecretStr(password), version_id="v0",
    )  # fmt: skip
