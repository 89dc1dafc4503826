"""The guard every server-side fetch of a user-supplied URL goes through (scrape; media remote URLs later).

Only http and https. The host is resolved by us, every address it resolves to must be public (no loopback,
private, link-local, CGNAT, multicast, reserved, metadata, nor IPv6 forms that embed such an IPv4), and the TCP
connection goes to the address that was checked: the check runs inside the connection's network backend, so there
is no second DNS lookup an attacker could rebind between the check and the connect. TLS still verifies and sends
SNI for the URL's hostname, and the Host header is the URL's. Every redirect is a new URL checked the same way.

An allow-list (`JAN_SSRF_ALLOW_HOSTS`) admits named hosts or address ranges, optionally on one port only, so tests
and operators can reach a server on a private address on purpose.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urljoin

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 5
USER_AGENT = "jan-server-fetch/1.0"
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


class FetchError(Exception):
    """The fetch could not be done (timeout, too large, too many redirects, network error); `str()` says why."""


class BlockedUrl(FetchError):
    """The URL, or an address its host resolves to, is one the server must not fetch; `reason` says which rule."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused to fetch {url}: {reason}")
        self.url = url
        self.reason = reason


# Ranges refused, most specific first so the reason names the real thing (the metadata IP is also link-local).
_BLOCKED_V4: list[tuple[ipaddress.IPv4Network, str]] = [
    (ipaddress.IPv4Network(net), reason)
    for net, reason in [
        ("169.254.169.254/32", "a cloud metadata endpoint"),
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private network address"),
        ("172.16.0.0/12", "a private network address"),
        ("192.168.0.0/16", "a private network address"),
        ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
        ("169.254.0.0/16", "a link-local address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    ]
]
_BLOCKED_V6: list[tuple[ipaddress.IPv6Network, str]] = [
    (ipaddress.IPv6Network(net), reason)
    for net, reason in [
        ("fd00:ec2::254/128", "a cloud metadata endpoint"),
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("2001::/32", "a Teredo tunnel address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
        ("3fff::/20", "a documentation address"),
    ]
]
# Everything public in IPv6 is in 2000::/3; the rest is special-purpose or unassigned.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# IPv6 forms that carry an IPv4 address which is what the packets reach: judged by that IPv4 address.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def blocked_reason(address: IPAddress) -> str | None:
    """Why the server must not connect to `address`, or None for a public address."""
    if isinstance(address, ipaddress.IPv4Address):
        for network, reason in _BLOCKED_V4:
            if address in network:
                return reason
        return None if address.is_global else "not a public address"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        embedded_reason = blocked_reason(embedded)
        return f"an IPv6 form of {embedded}, {embedded_reason}" if embedded_reason else None
    for network6, reason6 in _BLOCKED_V6:
        if address in network6:
            return reason6
    return None if address in _GLOBAL_UNICAST and address.is_global else "not a public address"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if (address in _IPV4_COMPATIBLE and int(address) > 1) or address in _NAT64 or address in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_ipv4_like(host: str) -> ipaddress.IPv4Address | None:
    """The address `inet_aton` (and so getaddrinfo and many URL parsers) reads in `host`, or None if it isn't one:
    1-4 dot-separated numbers in decimal, 0x-hex or 0-octal, the last filling the remaining bytes
    (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1` are all 127.0.0.1)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", part):
            numbers.append(int(part[2:], 16))
        elif re.fullmatch(r"0[0-7]*", part):
            numbers.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            numbers.append(int(part, 10))
        else:
            return None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host spells directly (IPv6 with or without brackets and zone, dotted or odd IPv4)."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return parse_ipv4_like(host)


@dataclass(frozen=True)
class SsrfPolicy:
    """What the operator allows despite the rules: hostnames or IP ranges, each on any port or one port."""

    allowed_hosts: frozenset[tuple[str, int | None]] = frozenset()
    allowed_networks: tuple[tuple[IPNetwork, int | None], ...] = field(default=())

    @classmethod
    def parse(cls, entries: Iterable[str]) -> SsrfPolicy:
        """Entries like `127.0.0.1:8080`, `10.1.0.0/16`, `[::1]:9000`, `search.internal`, `search.internal:8443`."""
        hosts: set[tuple[str, int | None]] = set()
        networks: list[tuple[IPNetwork, int | None]] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            match = re.fullmatch(r"\[(?P<v6>[^\]]+)\](?::(?P<port6>\d+))?|(?P<name>[^:]+)(?::(?P<port>\d+))?", entry)
            if match is None:
                # A bare IPv6 address or network without brackets: no port.
                networks.append((ipaddress.ip_network(entry, strict=False), None))
                continue
            name = match["v6"] or match["name"]
            port_text = match["port6"] or match["port"]
            port = int(port_text) if port_text else None
            try:
                networks.append((ipaddress.ip_network(name, strict=False), port))
            except ValueError:
                hosts.add((name.rstrip("."), port))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str, port: int) -> bool:
        return (host, None) in self.allowed_hosts or (host, port) in self.allowed_hosts

    def allows_address(self, address: IPAddress, port: int) -> bool:
        return any(address in net and allowed in (None, port) for net, allowed in self.allowed_networks)


def _normalized_host(host: str) -> str:
    return host.lower().strip("[]").rstrip(".")


async def resolve_checked(host: str, port: int, policy: SsrfPolicy) -> list[IPAddress]:
    """The addresses to connect to for `host`: all of them allowed, or BlockedUrl naming the first that isn't
    (its `url` is the host: `fetch` puts the URL in)."""
    name = _normalized_host(host)
    literal = parse_ip_literal(name)
    if literal is None and policy.allows_host(name, port):
        return await _resolve(name, port)
    if literal is None and not _HOSTNAME.match(name):
        raise BlockedUrl(host, f"{host!r} is not a valid hostname")
    if literal is None and (name == "localhost" or name.endswith(".localhost")):
        raise BlockedUrl(host, f"{host} is a localhost name")
    addresses = [literal] if literal is not None else await _resolve(name, port)
    for address in addresses:
        reason = blocked_reason(address)
        if reason and not policy.allows_address(address, port):
            # An address spelled the usual way speaks for itself; a name or an odd spelling shows what it means.
            shown = host if _usual_ip_spelling(name) else f"{host} ({address})"
            raise BlockedUrl(host, f"{shown} is {reason}")
    return addresses


def _usual_ip_spelling(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def _resolve(name: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchError(f"could not resolve {name}: {error.strerror}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"could not resolve {name}")
    return addresses


class _GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer with the check in it: a connection is only ever opened to an address that
    `resolve_checked` has just approved (the pinning), whatever name the URL had."""

    def __init__(self, policy: SsrfPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, self._policy)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedUrl(path, "unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded backend. httpx (0.28, pinned) takes no network backend argument, so the
    httpcore pool it built is replaced by one that has it; everything else (exception mapping, streaming) is
    httpx's own. No proxies: a proxy would make the connection on our behalf to wherever it likes."""

    def __init__(self, policy: SsrfPolicy) -> None:
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=4,
            network_backend=_GuardedNetworkBackend(policy),
        )


@dataclass(frozen=True)
class FetchResult:
    final_url: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type without parameters, lowercased ('' when the server sent none)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        match = re.search(r"charset=\"?([\w.:-]+)", self.headers.get("content-type", ""), re.IGNORECASE)
        return match.group(1) if match else None


def check_url(url: str) -> httpx.URL:
    """The parsed URL if its form may be fetched (http/https with a host); BlockedUrl otherwise. Addresses are
    judged when connecting."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise BlockedUrl(url, f"not a valid URL ({error})") from None
    if parsed.scheme not in ("http", "https"):
        raise BlockedUrl(url, f"only http and https URLs may be fetched, not {parsed.scheme or 'a relative URL'}")
    if not parsed.host:
        raise BlockedUrl(url, "the URL has no host")
    return parsed


async def fetch(
    url: str,
    *,
    policy: SsrfPolicy,
    max_bytes: int,
    timeout_seconds: float,
    headers: Mapping[str, str] | None = None,
    max_redirects: int = MAX_REDIRECTS,
) -> FetchResult:
    """GETs `url` following at most `max_redirects` redirects, each hop checked; the whole fetch (DNS, connects,
    body) must finish in `timeout_seconds` and the decoded body stay within `max_bytes`.

    Raises BlockedUrl for a URL or address the guard refuses, FetchError for everything else that went wrong.
    Any HTTP status is a result, except a redirect past the limit.
    """
    request_headers = {"user-agent": USER_AGENT, **(headers or {})}
    try:
        async with asyncio.timeout(timeout_seconds):
            async with httpx.AsyncClient(
                transport=_PinnedTransport(policy), follow_redirects=False, trust_env=False, timeout=timeout_seconds
            ) as client:
                return await _fetch_following_redirects(client, url, request_headers, max_bytes, max_redirects)
    except TimeoutError:
        raise FetchError(f"fetching {url} took longer than {timeout_seconds:g} s") from None
    except httpx.HTTPError as error:
        raise FetchError(f"fetching {url} failed: {error or type(error).__name__}") from None


async def _fetch_following_redirects(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], max_bytes: int, max_redirects: int
) -> FetchResult:
    shown, current = url, check_url(url)
    for _hop in range(max_redirects + 1):
        try:
            response = await client.send(client.build_request("GET", current, headers=headers), stream=True)
        except BlockedUrl as refused:  # raised while connecting, where the URL isn't known
            raise BlockedUrl(shown, refused.reason) from None
        try:
            location = response.headers.get("location")
            if response.status_code in _REDIRECT_STATUSES and location:
                shown = urldefrag(urljoin(str(current), location)).url
                current = check_url(shown)
                continue
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes and "content-encoding" not in response.headers:
                raise FetchError(f"{current} is larger than the {max_bytes} byte limit")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"{current} is larger than the {max_bytes} byte limit")
            return FetchResult(str(current), response.status_code, response.headers, bytes(body))
        finally:
            await response.aclose()
    raise FetchError(f"{url} redirected more than {max_redirects} times")
