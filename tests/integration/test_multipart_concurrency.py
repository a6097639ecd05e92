"""Streamed multipart uploads with several parts in flight (tasks/multipart.py) against the
stack's S3 (moto): the object is the stream byte for byte, and a part that fails for good
ends the whole upload with nothing left behind."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack.stack import BACKUP_BUCKET
from opsflows.errors import PermanentError
from tasks.multipart import MultipartUpload
from tests.backup_support import BackupEnv, backup_env

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "mpc") as made:
        yield made


class SlowParts:
    """A client whose part uploads take a while (as a real network does), counting how many
    are in flight at once; ``fail_part`` is refused for good (access denied)."""

    def __init__(self, client: Any, fail_part: int = 0) -> None:
        self.client, self.fail_part = client, fail_part
        self.lock = threading.Lock()
        self.flying = self.most = 0
        self.started: list[int] = []
        self.bodies: set[int] = set()  # the buffers parts were sent from

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def upload_part(self, **kw: Any) -> Any:
        with self.lock:
            self.flying += 1
            self.most = max(self.most, self.flying)
            self.started.append(kw["PartNumber"])
            assert isinstance(kw["Body"], bytearray), "a part is sent from its buffer, uncopied"
            self.bodies.add(id(kw["Body"]))
        try:
            threading.Event().wait(0.2)
            if kw["PartNumber"] == self.fail_part:
                raise ClientError(
                    {"Error": {"Code": "AccessDenied", "Message": "no"}}, "UploadPart"
                )
            return self.client.upload_part(**kw)
        finally:
            with self.lock:
                self.flying -= 1


def test_parts_upload_concurrently_and_the_object_is_the_stream(env: BackupEnv) -> None:
    body = os.urandom(5 * MIB * 19 + 12345)  # nineteen whole parts and a short last one
    key = env.store.key(env.dbname, "concurrent", "dump.pgc")
    client = SlowParts(env.client)
    seen: list[int] = []
    with MultipartUpload(client, BACKUP_BUCKET, key) as upload:
        size, digest = upload.feed(
            io.BytesIO(body), 5 * MIB, on_part=lambda n, _: seen.append(n), concurrency=4
        )
        upload.complete()
    assert (size, digest) == (len(body), hashlib.sha256(body).hexdigest())
    stored = env.client.get_object(Bucket=BACKUP_BUCKET, Key=key)["Body"].read()
    assert stored == body
    assert sorted(seen) == list(range(1, 21)) and len(upload.parts) == 20
    # S3 checked every part's CRC32 and keeps their composite (no full-object checksum to
    # work out at completion, which moto took seconds over for a large dump).
    assert all(part.get("ChecksumCRC32") for part in upload.parts), upload.parts
    head = env.client.head_object(Bucket=BACKUP_BUCKET, Key=key, ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") and "ChecksumCRC64NVME" not in head, head
    assert client.most == 4 == upload.times.concurrency  # never more than asked
    # 20 parts went through at most 2 queued + 4 in flight + 2 in hand buffers, reused; the
    # object above is byte for byte the stream, so no buffer was reused while still sending.
    assert len(client.bodies) <= 8, len(client.bodies)
    times = upload.times
    assert times.upload_busy_s >= 20 * 0.2 and times.upload_wall_s < times.upload_busy_s
    assert env.uploads() == []


def test_one_part_refused_ends_the_upload_and_leaves_nothing(env: BackupEnv) -> None:
    body = os.urandom(5 * MIB * 12)
    key = env.store.key(env.dbname, "refused", "dump.pgc")
    client = SlowParts(env.client, fail_part=3)
    stopped = threading.Event()
    with (
        pytest.raises(PermanentError, match="upload part 3"),
        MultipartUpload(client, BACKUP_BUCKET, key) as upload,
    ):
        upload.feed(io.BytesIO(body), 5 * MIB, stop_source=stopped.set, concurrency=4)
    assert stopped.is_set(), "the producer is told to stop"
    assert max(client.started) < 12, "no part is started after the failure is seen"
    assert env.uploads() == [] and key not in env.keys()
