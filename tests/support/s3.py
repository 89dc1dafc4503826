"""A real S3-speaking server for tests: moto in server mode on a free loopback port, stopped by its PID.

moto accepts any credentials and keeps everything in memory; `create_bucket` makes a bucket with a plain HTTP PUT
(moto does not require a signature for it).
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.support.ports import free_port

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


class MotoS3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._process.returncode}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start")

    def create_bucket(self, name: str) -> None:
        response = httpx.put(f"{self.endpoint}/{name}")
        response.raise_for_status()

    def object_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys in the bucket (ListObjectsV2, parsed loosely: tests only need the names)."""
        response = httpx.get(f"{self.endpoint}/{bucket}", params={"list-type": "2", "prefix": prefix})
        response.raise_for_status()
        keys = []
        for piece in response.text.split("<Key>")[1:]:
            keys.append(piece.split("</Key>", 1)[0])
        return keys

    def settings(self, bucket: str) -> dict[str, str]:
        """Jan Server settings (for make_stack) that store media in `bucket` here."""
        return {
            "media_storage": "s3",
            "media_s3_bucket": bucket,
            "media_s3_endpoint": self.endpoint,
            "media_s3_region": REGION,
            "media_s3_access_key": ACCESS_KEY,
            "media_s3_secret_key": SECRET_KEY,
            "media_s3_path_style": "true",
        }

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
