"""Media throughput: upload and download of a 5 MiB image through Envoy (the Media API) against the same bytes
moved directly to and from the storage, on S3 (a moto server on loopback) and on local storage.

    .venv/bin/python -m bench.media [--rounds 10] [--megabytes 5]

Paths, each timed `--rounds` times with a keep-alive httpx client, every upload with a different image (random
pixels, stored uncompressed, so every byte is new and nothing is deduped):
- upload via Envoy: `POST /v1/media` multipart (and base64 JSON), which sniffs, verifies (Pillow), hashes and
  stores the bytes, then writes the row; direct S3: a presigned PUT of the same size; direct local: writing the
  file into the media directory (temp file and rename, as LocalStorage does).
- download via Envoy: `GET /v1/media/{id}` (streamed in 1 MiB HttpBody chunks), and the local presigned URL
  (also through Envoy, no credentials); direct S3: the presigned GET; direct local: reading the file.
MB/s = image bytes / median seconds (MB = 10^6 bytes). Ratio = Envoy MB/s / direct MB/s.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from bench import machine_line, print_table, running_stack
from tests.support.s3 import MotoS3Server

BUCKET = "bench-media"


def noise_png(megabytes: float) -> bytes:
    side = int((megabytes * 1024 * 1024 / 3) ** 0.5)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def timed(rounds: int, call: Callable[[int], None]) -> float:
    """Median seconds of `call(round)` over `rounds` calls (after one warm-up call, round -1)."""
    call(-1)
    samples = []
    for index in range(rounds):
        started = time.perf_counter()
        call(index)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def measure(base_url: str, images: list[bytes], rounds: int, direct: DirectStorage) -> list[tuple[str, float]]:
    """(path, median seconds) for each path."""
    results: list[tuple[str, float]] = []
    with httpx.Client(base_url=base_url, timeout=120) as http:
        headers = {"Authorization": f"Bearer {guest_token_for(base_url)}"}
        uploaded: list[dict[str, str]] = []

        def upload_multipart(index: int) -> None:
            files = {"file": ("i.png", images[index + 1], "image/png")}
            response = http.post("/v1/media", headers=headers, files=files)
            response.raise_for_status()
            uploaded.append(response.json())

        results.append(("upload via Envoy (multipart)", timed(rounds, upload_multipart)))
        json_images = [noise_png(len(images[0]) / 1024 / 1024) for _ in range(rounds + 1)]

        def upload_json(index: int) -> None:
            data_url = "data:image/png;base64," + base64.b64encode(json_images[index + 1]).decode()
            body = {"source": {"type": "data_url", "data_url": data_url}}
            response = http.post("/v1/media", headers=headers, json=body)
            response.raise_for_status()

        results.append(("upload via Envoy (base64 JSON)", timed(rounds, upload_json)))
        results.append((f"upload direct ({direct.name})", timed(rounds, lambda i: direct.put(i + 1, images[i + 1]))))

        media_id, presigned = uploaded[-1]["id"], uploaded[-1]["presigned_url"]

        def download_api(_: int) -> None:
            response = http.get(f"/v1/media/{media_id}", headers=headers)
            assert len(response.content) == len(images[rounds]), response.status_code

        results.append(("download via Envoy (GET /v1/media/{id})", timed(rounds, download_api)))
        if presigned.startswith(base_url):
            results.append(("download via Envoy (local presigned URL)",
                            timed(rounds, lambda _: assert_size(http.get(presigned), len(images[rounds])))))
        results.append((f"download direct ({direct.name})", timed(rounds, lambda _: direct.get(presigned))))
    return results


def assert_size(response: httpx.Response, size: int) -> None:
    response.raise_for_status()
    assert len(response.content) == size


def guest_token_for(base_url: str) -> str:
    response = httpx.post(f"{base_url}/auth/guest-login")
    response.raise_for_status()
    return str(response.json()["access_token"])


class DirectStorage:
    """The same bytes moved without the Media API."""

    def __init__(self, name: str, put: Callable[[int, bytes], None], get: Callable[[str], None]) -> None:
        self.name = name
        self.put = put
        self.get = get


def s3_direct(base_url: str, count: int) -> DirectStorage:
    """Presigned PUT URLs (from prepare-upload, made before the clock starts) and GETs, straight to S3."""
    client = httpx.Client(timeout=120)
    headers = {"Authorization": f"Bearer {guest_token_for(base_url)}"}
    urls = [
        httpx.post(f"{base_url}/v1/media/prepare-upload", headers=headers, json={"mime_type": "image/png"})
        .json()["upload_url"]
        for _ in range(count)
    ]

    def put(index: int, data: bytes) -> None:
        client.put(urls[index], content=data, headers={"Content-Type": "image/png"}).raise_for_status()

    def get(url: str) -> None:
        client.get(url).raise_for_status()

    return DirectStorage("S3 presigned URL", put, get)


def local_direct(folder: Path) -> DirectStorage:
    target = folder / "direct.png"

    def put(_: int, data: bytes) -> None:
        descriptor, name = tempfile.mkstemp(dir=folder)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(name, target)

    def get(_: str) -> None:
        target.read_bytes()

    return DirectStorage("local file", put, get)


def report(title: str, size: int, results: list[tuple[str, float]]) -> None:
    print(f"\n### {title}\n")
    direct = {kind: seconds for path, seconds in results if "direct" in path for kind in ("upload", "download")
              if path.startswith(kind)}
    rows = []
    for path, seconds in results:
        kind = path.split()[0]
        mbps = size / seconds / 1e6
        ratio = "" if "direct" in path else f"{(direct[kind] / seconds):.2f}"
        rows.append((path, f"{seconds * 1000:.1f}", f"{mbps:.0f}", ratio))
    print_table(["path", "median ms", "MB/s", "ratio vs direct"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--megabytes", type=float, default=5.0)
    args = parser.parse_args()
    print(machine_line())
    images = [noise_png(args.megabytes) for _ in range(args.rounds + 1)]
    size = len(images[0])
    print(f"image: {size} bytes PNG, {args.rounds} rounds per path")

    moto = MotoS3Server()
    moto.start()
    try:
        moto.create_bucket(BUCKET)
        with running_stack(**moto.settings(BUCKET)) as stack:
            results = measure(stack.base_url, images, args.rounds, s3_direct(stack.base_url, args.rounds + 1))
        report("S3 storage (moto on loopback)", size, results)
    finally:
        moto.stop()
    with running_stack() as stack, tempfile.TemporaryDirectory() as folder:
        results = measure(stack.base_url, images, args.rounds, local_direct(Path(folder)))
    report("Local storage", size, results)


if __name__ == "__main__":
    main()
