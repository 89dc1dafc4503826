"""What the Envoy gateway costs: `GET /v1/models` through Envoy (REST, JWT, transcoding) against the same RPC,
`jan.llm.v1.LlmService/ListModels`, called over gRPC directly and through Envoy, in one run against one stack.

    .venv/bin/python -m bench.gateway [--requests 3000] [--concurrency 8] [--seconds 5]

Clients. The headline numbers use two equally lean raw-socket clients, so client overhead cancels out:
- REST: HTTP/1.1 keep-alive, one prebuilt request, reads the headers and Content-Length bytes.
- gRPC: HTTP/2 prior knowledge (h2c), prebuilt HEADERS (literal HPACK) + DATA frames, reads frames until the
  stream ends. Same bytes on the wire as any gRPC client; used both directly and through Envoy.
grpcio's own client (sync stub) is measured too, directly and through Envoy: the pure proxy hop as a real gRPC
client sees it.

Added latency = p50(REST through Envoy) - p50(gRPC direct), both raw-socket clients, sequential, one connection.
The same REST call with an API key instead of the JWT shows what the ext_authz check (a gRPC call to the auth
service) adds. Sequential samples are interleaved in blocks across the paths so drift hits every path alike.
"""

from __future__ import annotations

import argparse
import gc
import re
import struct
import threading
import time
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from bench import (
    RawConnection,
    api_key,
    guest_token,
    machine_line,
    percentile,
    print_table,
    running_stack,
    verdict,
)
from server.gen.jan.llm.v1 import llm_pb2

METHOD = "/jan.llm.v1.LlmService/ListModels"
TARGET_ADDED_P50_MS = 0.5
WARMUP = 300
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
BLOCK = 250


class RestClient(RawConnection):
    """HTTP/1.1 keep-alive: sends one prebuilt GET and reads exactly Content-Length bytes back."""

    def __init__(self, host: str, port: int, token: str) -> None:
        super().__init__(host, port)
        self._request = (
            f"GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\n\r\n"
        ).encode()

    def call(self) -> bytes:
        self.sock.sendall(self._request)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self.recv()
        head, buffer = buffer[:end], buffer[end + 4 :]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:200]!r}")
        length = int(_CONTENT_LENGTH.search(head).group(1))  # type: ignore[union-attr]
        while len(buffer) < length:
            buffer += self.recv()
        body, self.buffer = buffer[:length], buffer[length:]
        return body


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman: any HPACK decoder accepts it."""
    encoded_name, encoded_value = name.encode(), value.encode()
    return (
        b"\x00"
        + _hpack_int(len(encoded_name), 7)
        + encoded_name
        + _hpack_int(len(encoded_value), 7)
        + encoded_value
    )


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4


class RawGrpcClient(RawConnection):
    """A minimal gRPC-over-h2c client for one unary method with an empty request. Reads frames until our stream
    ends; answers SETTINGS and PING; opens a huge receive window up front so it never has to send WINDOW_UPDATE."""

    def __init__(self, host: str, port: int, method: str, token: str | None = None) -> None:
        super().__init__(host, port)
        window = 2**31 - 1
        self.sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _frame(_SETTINGS, 0, 0, struct.pack(">HI", 0x2, 0) + struct.pack(">HI", 0x4, window))
            + _frame(0x8, 0, 0, struct.pack(">I", window - 65535))
        )
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", f"{host}:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if token:
            headers.append(("authorization", f"Bearer {token}"))
        self._block = b"".join(_hpack_literal(name, value) for name, value in headers)
        self._message = b"\x00\x00\x00\x00\x00"  # uncompressed, zero-length protobuf (ListModelsRequest {})
        self._stream = 1

    def call(self) -> bytes:
        stream = self._stream
        self._stream += 2
        self.sock.sendall(
            _frame(_HEADERS, _END_HEADERS, stream, self._block) + _frame(_DATA, _END_STREAM, stream, self._message)
        )
        data = b""
        while True:
            kind, flags, frame_stream, payload = self._read_frame()
            if frame_stream == stream:
                if kind == _DATA:
                    data += payload
                elif kind == _RST_STREAM:
                    raise RuntimeError(f"stream reset, error code {struct.unpack('>I', payload)[0]}")
                if flags & _END_STREAM and kind in (_DATA, _HEADERS):
                    break
            elif kind == _SETTINGS and not flags & _ACK:
                self.sock.sendall(_frame(_SETTINGS, _ACK, 0, b""))
            elif kind == _PING and not flags & _ACK:
                self.sock.sendall(_frame(_PING, _ACK, 0, payload))
            elif kind == _GOAWAY:
                raise RuntimeError(f"GOAWAY: {payload!r}")
        if len(data) < 5:
            raise RuntimeError("no response message (the trailers carry a non-OK grpc-status)")
        return data[5:]

    def _read_frame(self) -> tuple[int, int, int, bytes]:
        while len(self.buffer) < 9:
            self.buffer += self.recv()
        length = int.from_bytes(self.buffer[:3], "big")
        while len(self.buffer) < 9 + length:
            self.buffer += self.recv()
        frame, self.buffer = self.buffer[: 9 + length], self.buffer[9 + length :]
        return frame[3], frame[4], int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF, frame[9:]


class GrpcioClient:
    """grpcio's sync client, raw bytes in and out (no protobuf work in the loop)."""

    def __init__(self, target: str, token: str | None = None) -> None:
        self._channel = grpc.insecure_channel(target)
        self._call = self._channel.unary_unary(METHOD)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    def call(self) -> bytes:
        return self._call(b"", metadata=self._metadata, timeout=10)

    def close(self) -> None:
        self._channel.close()


Path = tuple[str, str, Callable[[], object]]  # (name, client, factory of a client with .call/.close)


def sequential(paths: list[Path], requests: int) -> dict[str, list[float]]:
    """Latency samples (ms) per path: warm-up, then `requests` calls each, interleaved in blocks."""
    clients = {name: factory() for name, _, factory in paths}
    samples: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    try:
        for client in clients.values():
            for _ in range(WARMUP):
                client.call()  # type: ignore[attr-defined]
        gc.collect()
        gc.disable()
        clock = time.perf_counter_ns
        done = 0
        while done < requests:
            block = min(BLOCK, requests - done)
            for name, client in clients.items():
                call = client.call  # type: ignore[attr-defined]
                out = samples[name]
                for _ in range(block):
                    started = clock()
                    call()
                    out.append((clock() - started) / 1e6)
            done += block
    finally:
        gc.enable()
        for client in clients.values():
            client.close()  # type: ignore[attr-defined]
    return samples


def concurrent(factory: Callable[[], object], connections: int, seconds: float) -> tuple[float, list[float]]:
    """req/s and latency samples (ms) with `connections` threads, each with its own client, for `seconds`."""
    clients = [factory() for _ in range(connections)]
    for client in clients:
        for _ in range(50):
            client.call()  # type: ignore[attr-defined]
    latencies: list[list[float]] = [[] for _ in clients]
    barrier = threading.Barrier(connections + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        call = clients[index].call  # type: ignore[attr-defined]
        out = latencies[index]
        clock = time.perf_counter
        barrier.wait()
        end = stop_at[0]
        while (now := clock()) < end:
            call()
            out.append((clock() - now) * 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    stop_at[0] = started + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()  # type: ignore[attr-defined]
    flat = [sample for per_thread in latencies for sample in per_thread]
    return len(flat) / elapsed, flat


def check(paths: list[Path]) -> None:
    """Every path must answer with the same model list (a 401 through Envoy would otherwise pass as fast)."""
    expected = None
    for name, _, factory in paths:
        client = factory()
        try:
            body = client.call()  # type: ignore[attr-defined]
        finally:
            client.close()  # type: ignore[attr-defined]
        if name.startswith("REST"):
            models = json_format.Parse(body, llm_pb2.ListModelsResponse(), ignore_unknown_fields=True)
        else:
            models = llm_pb2.ListModelsResponse.FromString(body)
        expected = expected or models
        if not models.data or models != expected:
            raise RuntimeError(f"{name}: unexpected answer {body[:200]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="sequential requests per path (after warm-up)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (threads) for the req/s test")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each concurrent test")
    args = parser.parse_args()

    print(f"# bench.gateway — {machine_line()}")
    with running_stack() as stack:
        host, port = stack.base_url.removeprefix("http://").split(":")
        envoy_target = f"{host}:{port}"
        grpc_host, grpc_port = stack.grpc_target.split(":")
        token = guest_token(stack)
        key = api_key(stack, token)

        paths: list[Path] = [
            ("REST via Envoy", "raw HTTP/1.1", lambda: RestClient(host, int(port), token)),
            ("REST via Envoy, API key", "raw HTTP/1.1", lambda: RestClient(host, int(port), key)),
            ("gRPC direct", "raw h2c", lambda: RawGrpcClient(grpc_host, int(grpc_port), METHOD)),
            ("gRPC via Envoy", "raw h2c", lambda: RawGrpcClient(host, int(port), METHOD, token)),
            ("gRPC direct", "grpcio", lambda: GrpcioClient(stack.grpc_target)),
            ("gRPC via Envoy", "grpcio", lambda: GrpcioClient(envoy_target, token)),
        ]
        keyed = [(f"{name} [{client}]", client, factory) for name, client, factory in paths]
        check(keyed)
        samples = sequential(keyed, args.requests)

        token = guest_token(stack)  # a fresh one: the sequential part may take a while on a slow machine
        loaded = {}
        for name, _, factory in keyed[:3]:
            loaded[name] = concurrent(factory, args.concurrency, args.seconds)

    print(f"\nSequential, one connection, n={args.requests} per path after {WARMUP} warm-up calls (ms):\n")
    rows = []
    for name, client, _ in keyed:
        s = samples[name]
        rows.append(
            [name.split(" [")[0], client, f"{percentile(s, 0.5):.3f}", f"{percentile(s, 0.9):.3f}",
             f"{percentile(s, 0.99):.3f}", f"{1000 / (sum(s) / len(s)):.0f}"]
        )
    print_table(["path", "client", "p50", "p90", "p99", "req/s"], rows)

    print(f"\n{args.concurrency} connections (one thread each, client in the same 2-core box), {args.seconds:g} s:\n")
    rows = []
    for name, (rate, lat) in loaded.items():
        label, client = name.split(" [")
        rows.append([label, client.rstrip("]"), f"{rate:.0f}", f"{percentile(lat, 0.5):.2f}",
                     f"{percentile(lat, 0.99):.2f}"])
    print_table(["path", "client", "req/s", "p50 ms", "p99 ms"], rows)

    p50 = {name: percentile(s, 0.5) for name, s in samples.items()}
    added = p50["REST via Envoy [raw HTTP/1.1]"] - p50["gRPC direct [raw h2c]"]
    api_key_check = p50["REST via Envoy, API key [raw HTTP/1.1]"] - p50["REST via Envoy [raw HTTP/1.1]"]
    hop_raw = p50["gRPC via Envoy [raw h2c]"] - p50["gRPC direct [raw h2c]"]
    hop_grpcio = p50["gRPC via Envoy [grpcio]"] - p50["gRPC direct [grpcio]"]
    rest_rate = loaded["REST via Envoy [raw HTTP/1.1]"][0]
    direct_rate = loaded["gRPC direct [raw h2c]"][0]
    print(
        "\nAdded latency = p50(REST via Envoy, raw HTTP/1.1) - p50(gRPC direct, raw h2c); both sequential on one "
        "keep-alive connection\n(Envoy: header_mutation + jwt_authn ES256 + Lua + 2 local rate limiters + Lua + JSON"
        " transcoding + router, and the extra loopback hop):\n"
    )
    print_table(
        ["figure", "value", "target", "result"],
        [
            ["gateway added latency, p50", f"{added:+.3f} ms", f"<= {TARGET_ADDED_P50_MS} ms",
             verdict(added <= TARGET_ADDED_P50_MS)],
            ["API key instead of JWT (ext_authz check), p50", f"{api_key_check:+.3f} ms", "-", "-"],
            ["pure proxy hop (gRPC via Envoy - direct), raw h2c, p50", f"{hop_raw:+.3f} ms", "-", "-"],
            ["pure proxy hop, grpcio client, p50", f"{hop_grpcio:+.3f} ms", "-", "-"],
            [f"REST via Envoy / gRPC direct req/s at {args.concurrency} connections",
             f"{rest_rate / direct_rate:.2f}x", "-", "-"],
        ],
    )


if __name__ == "__main__":
    main()
