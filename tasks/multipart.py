"""Stream any byte source into one S3 multipart upload, with bounded memory and SHA-256.

A reader thread cuts the source into parts (hashing them) and hands them through a bounded
queue to the uploader, which keeps up to ``concurrency`` part uploads in flight, so memory is
a few parts whatever the size (``depth`` queued, ``concurrency`` in flight, one being read),
in buffers that are reused from part to part and sent as they are (no copy).
The upload is either completed or aborted (``with MultipartUpload(...)``): a failure never
leaves orphan parts. Transient part failures are retried here; a lasting failure propagates
to the task retry.
The uploader never waits unboundedly for the reader: a source that stops producing bytes is
judged by a :class:`~tasks.pipes.StallWatch`, which ends the upload with ``Stalled``.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any

from decisions.parts import S3_MAX_PARTS, part_size_for
from opsflows.errors import PermanentError, Stalled, TransientError, scrub
from tasks.part_buffers import PartBuffers
from tasks.pipes import POLL_S, StallWatch
from tasks.storage import aws_errors, cleanup_call

#: The checksum S3 verifies on every part and keeps for the object (what boto3's own
#: transfer manager declares): each part is checked on arrival, and the completed object
#: carries the composite of the parts' checksums. Without it, S3 (and moto) work out a
#: full-object CRC64 at completion instead. Our own SHA-256 of the whole dump is separate.
CHECKSUM_ALGORITHM = "CRC32"
_CHECKSUM_MEMBER = f"Checksum{CHECKSUM_ALGORITHM}"

#: How long the uploader waits for the reader thread to finish once the source was stopped.
_READER_JOIN_S = 30.0


@dataclass
class StreamTimes:
    """Where a streamed upload's time went (seconds; the stages overlap).

    ``read_s``: the reader thread from start to the end of the stream (the producer's pace);
    ``checksum_s``: time in SHA-256; ``upload_busy_s``: the part uploads added up;
    ``upload_wall_s``: first part started to last part done; ``concurrency``: most parts
    in flight at once.
    """

    read_s: float = 0.0
    checksum_s: float = 0.0
    upload_busy_s: float = 0.0
    upload_wall_s: float = 0.0
    concurrency: int = 0
    first_part_at: float = 0.0  # time.monotonic() when the first part upload started
    parts: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class UploadResult:
    """A finished upload: where it is, how big, its SHA-256, how many parts."""

    key: str
    size_bytes: int
    sha256: str
    parts: int


class _NotSent(PermanentError):
    """A part not (or no longer) tried because another part of the upload failed for good
    (never reported: the part that failed raises its own error)."""


class _PartReader(threading.Thread):
    """Cuts ``source`` into parts (hashing them) and queues them; ``None`` ends the stream."""

    def __init__(
        self, source: IO[bytes], base_part: int, out: queue.Queue[Any], buffers: PartBuffers
    ) -> None:
        super().__init__(name="dump-part-reader", daemon=True)
        self.source, self.base_part, self.out = source, base_part, out
        self.buffers = buffers
        self.digest = hashlib.sha256()
        self.size = 0
        #: Bytes read so far, counted per read (``size`` counts whole parts): progress.
        self.seen = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.checksum_s = 0.0
        self.read_s = 0.0

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, into: memoryview) -> int:
        reader = getattr(self.source, "readinto1", None) or self.source.readinto  # type: ignore[attr-defined]
        return int(reader(into) or 0)

    def run(self) -> None:
        number = 1
        began = time.monotonic()
        try:
            while not self.stop.is_set():
                if number > S3_MAX_PARTS:
                    raise PermanentError(
                        f"the dump exceeds {S3_MAX_PARTS} parts",
                        hint="raise the first part size (the estimate was far too small)",
                    )
                buf = self.buffers.take(part_size_for(number, self.base_part), self.stop)
                if buf is None:
                    break
                view = memoryview(buf)
                filled = 0
                while filled < len(buf):
                    # One read at a time (readinto would block until the part is full), so
                    # ``seen`` moves with every byte the producer writes.
                    got = self._read(view[filled:])
                    if not got:
                        break
                    filled += got
                    self.seen += got
                view.release()
                if filled == 0:
                    self.buffers.give(buf)
                    break
                del buf[filled:]
                hashing = time.monotonic()
                self.digest.update(buf)
                self.checksum_s += time.monotonic() - hashing
                self.size += filled
                if not self._put((number, buf)) or filled < part_size_for(number, self.base_part):
                    break
                number += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the uploader thread
            self.error = exc
        finally:
            self.read_s = time.monotonic() - began
            self._put(None)


class MultipartUpload:
    """One S3 multipart upload that is either completed or aborted, never left behind."""

    def __init__(self, client: Any, bucket: str, key: str, *, part_retries: int = 2) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.part_retries = part_retries
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.completed = False
        self.times = StreamTimes()
        #: Set when a part failed for good: the parts still in flight stop retrying.
        self.failed = threading.Event()

    def __enter__(self) -> MultipartUpload:
        with aws_errors(f"start upload of s3://{self.bucket}/{self.key}"):
            resp = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                ContentType="application/octet-stream",
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            )
        self.upload_id = str(resp["UploadId"])
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.completed:
            self.abort()

    def abort(self) -> bool:
        """Abort the upload (parts deleted); retried, since a blip must not orphan parts."""
        if self.upload_id is None:
            return True
        upload_id = self.upload_id
        return cleanup_call(
            lambda: self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id
            ),
            f"abort upload of {self.key}",
        )

    def put_part(self, number: int, data: bytes | bytearray) -> None:
        """Upload one part (transient failures retried here); safe from several threads."""
        for attempt in range(self.part_retries + 1):
            try:
                if self.failed.is_set():
                    raise _NotSent(f"part {number} of {self.key} not sent: another part failed")
                with aws_errors(f"upload part {number} of {self.key}"):
                    resp = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=self.key,
                        UploadId=self.upload_id,
                        PartNumber=number,
                        Body=data,
                        ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                    )
                part = {"PartNumber": number, "ETag": resp["ETag"]}
                if _CHECKSUM_MEMBER in resp:
                    part[_CHECKSUM_MEMBER] = resp[_CHECKSUM_MEMBER]
                self.parts.append(part)
                return
            except TransientError:
                if attempt == self.part_retries or self.failed.is_set():
                    self.failed.set()
                    raise
                time.sleep(0.5 * 2**attempt)
            except _NotSent:
                raise
            except BaseException:
                self.failed.set()
                raise

    def feed(
        self,
        source: IO[bytes],
        base_part: int,
        on_part: Callable[[int, int], None] | None = None,
        depth: int = 2,
        stop_source: Callable[[], None] | None = None,
        watch: StallWatch | None = None,
        concurrency: int = 1,
    ) -> tuple[int, str]:
        """Upload everything ``source`` yields; (bytes, sha256 hex).

        ``depth`` parts may wait in the queue and ``concurrency`` be uploading at once
        (memory is about ``depth + concurrency + 1`` parts); ``stop_source`` ends the
        producer when the upload fails, so the reader can finish. ``watch`` judges the
        source while the uploader waits for a part (the bytes the reader got count as
        progress; time spent uploading does not count as silence) and raises ``Stalled``
        when it stopped producing. The first part that fails for good ends the upload: the
        others in flight are waited for, none is started after it.
        """
        parts: queue.Queue[Any] = queue.Queue(maxsize=depth)
        # Every part is in one place: being read, queued, held by this loop, or in flight.
        buffers = PartBuffers(depth + max(1, concurrency) + 2)
        reader = _PartReader(source, base_part, parts, buffers)
        if watch is not None:
            watch.add(lambda: reader.seen)
        pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="part-upload")
        flying: dict[Future[float], int] = {}
        first_start: float | None = None
        last_end = 0.0

        def timed(number: int, data: bytearray) -> float:
            began = time.monotonic()
            try:
                self.put_part(number, data)
            finally:
                buffers.give(data)  # sent or given up: the buffer is free for a new part
            return time.monotonic() - began

        def settle(block: bool) -> None:
            """Collect finished uploads (waiting for one when ``block``); re-raise a failure."""
            nonlocal last_end
            if not flying:
                return
            done, _ = wait(list(flying), timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for future in done:
                number = flying.pop(future)
                if isinstance(future.exception(), _NotSent):
                    continue  # the part that failed for good raises its own error
                seconds = future.result()
                last_end = time.monotonic()
                self.times.upload_busy_s += seconds
                self.times.parts.append(seconds)
                if on_part is not None:
                    on_part(number, reader.size)
                if watch is not None:
                    watch.busy()

        reader.start()
        ok = False
        try:
            while True:
                settle(block=len(flying) >= max(1, concurrency) or self.failed.is_set())
                if self.failed.is_set() and not flying:
                    raise PermanentError(f"upload of {self.key} failed")  # not reached
                try:
                    item = parts.get(timeout=POLL_S)
                except queue.Empty:
                    if watch is not None and not flying:
                        watch.check()
                    continue
                if item is None:
                    break
                number, data = item
                if first_start is None:
                    first_start = time.monotonic()
                flying[pool.submit(timed, number, data)] = number
                self.times.concurrency = max(self.times.concurrency, len(flying))
                del data, item
            while flying:
                settle(block=True)
            ok = True
        finally:
            if not ok and stop_source is not None:
                stop_source()
            reader.stop.set()
            # a failed upload: the parts in flight end (each bounded by its retries)
            pool.shutdown(wait=True, cancel_futures=True)
            reader.join(timeout=_READER_JOIN_S)
        if first_start is not None:
            self.times.upload_wall_s = last_end - first_start
            self.times.first_part_at = first_start
        self.times.read_s, self.times.checksum_s = reader.read_s, reader.checksum_s
        if reader.is_alive():
            raise Stalled(
                f"reading the dump stream did not finish within {_READER_JOIN_S:g} s of its end",
                hint="the producer hung; it was stopped, run again",
            )
        if reader.error is not None:
            raise PermanentError(f"reading the dump stream failed: {scrub(str(reader.error))}")
        return reader.size, reader.digest.hexdigest()

    def complete(self) -> None:
        with aws_errors(f"complete upload of {self.key}"):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": sorted(self.parts, key=lambda p: p["PartNumber"])},
            )
        self.completed = True
