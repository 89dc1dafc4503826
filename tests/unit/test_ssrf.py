"""The SSRF guard (server/core/ssrf.py) against hostile URLs, with a real loopback server as the one allowed target."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from server.core.ssrf import BlockedUrl, FetchError, SsrfPolicy, fetch, parse_ipv4_like
from tests.support.ports import free_port
from tests.support.search_standin import ARTICLE_TITLE, SearchStandin


@pytest.fixture(scope="module")
def standin() -> Iterator[SearchStandin]:
    server = SearchStandin().start()
    yield server
    server.stop()


@pytest.fixture
def policy(standin: SearchStandin) -> SsrfPolicy:
    """The stand-in's own port is the only private destination allowed."""
    return SsrfPolicy.parse([f"127.0.0.1:{standin.port}"])


async def get(url: str, policy: SsrfPolicy, **options: Any) -> Any:
    return await fetch(url, policy=policy, max_bytes=options.pop("max_bytes", 1_000_000),
                       timeout_seconds=options.pop("timeout", 5), **options)


HOSTILE_URLS = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:9/admin", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://0x7f.1/", "0x7f.1 (127.0.0.1) is a loopback address"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "2130706433 (127.0.0.1) is a loopback address"),
    ("http://0177.0.0.1/", "not a valid URL"),
    ("http://127.1/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata endpoint"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata endpoint"),
    ("http://[64:ff9b::a9fe:a9fe]/", "IPv6 form of 169.254.169.254, a cloud metadata endpoint"),
    ("http://10.0.0.1/", "private network"),
    ("http://172.16.0.1/", "private network"),
    ("http://172.31.255.254/", "private network"),
    ("http://192.168.1.1/", "private network"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://[::ffff:127.0.0.1]/", "IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[::ffff:7f00:1]/", "IPv6 form of 127.0.0.1"),
    ("http://[::ffff:a00:1]/", "IPv6 form of 10.0.0.1, a private network address"),
    ("http://[::127.0.0.1]/", "IPv6 form of 127.0.0.1"),
    ("http://[2002:7f00:1::]/", "IPv6 form of 127.0.0.1"),
    ("http://[::ffff:0:7f00:1]/", "IPv6 form of 127.0.0.1"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("http://[5f00::1]/", "not a public address"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://169.254.10.10/", "link-local"),
    ("http://[fc00::1]/", "private (unique local)"),
    ("http://[fd12:3456::1]/", "private (unique local)"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.1/", "not a public address"),
    ("http://localhost/", "localhost name"),
    ("http://LOCALHOST./", "localhost name"),
    ("http://admin.localhost:8080/", "localhost name"),
    ("http://%31%32%37.0.0.1/", "not a valid hostname"),
    ("file:///etc/passwd", "only http and https URLs may be fetched, not file"),
    ("gopher://127.0.0.1:70/_stats", "not gopher"),
    ("ftp://ftp.example.com/pub", "not ftp"),
    ("dict://127.0.0.1:11211/stat", "not dict"),
    ("/relative/path", "not a relative URL"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE_URLS, ids=[url for url, _ in HOSTILE_URLS])
async def test_hostile_urls_are_refused_with_a_clear_reason(url: str, reason: str, policy: SsrfPolicy) -> None:
    with pytest.raises(BlockedUrl) as refused:
        await get(url, policy)
    assert reason in refused.value.reason
    assert str(refused.value).startswith(f"refused to fetch {url}")


async def test_a_dns_name_that_resolves_to_loopback_is_refused(policy: SsrfPolicy) -> None:
    name = socket.gethostname()  # /etc/hosts maps the machine's name to a loopback address on most hosts
    if not ipaddress.ip_address(socket.gethostbyname(name)).is_loopback:
        pytest.skip(f"{name} does not resolve to loopback here")
    with pytest.raises(BlockedUrl, match=rf"{name} \(127\.[0-9.]+\) is a loopback address"):
        await get(f"http://{name}/", policy)


async def test_the_allow_listed_standin_is_reachable(standin: SearchStandin, policy: SsrfPolicy) -> None:
    result = await get(f"{standin.base_url}/pages/article.html", policy)
    assert result.status == 200 and result.content_type == "text/html" and result.charset == "utf-8"
    assert ARTICLE_TITLE.encode() in result.body


async def test_an_allowed_host_on_another_port_is_still_refused(policy: SsrfPolicy) -> None:
    with pytest.raises(BlockedUrl, match="loopback"):
        await get(f"http://127.0.0.1:{free_port()}/", policy)


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{other}/",
    "http://localhost:{other}/",
    "http://[::1]:{other}/",
    "http://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
])
async def test_every_redirect_is_checked_again(standin: SearchStandin, policy: SsrfPolicy, target: str) -> None:
    location = target.format(other=free_port())
    with pytest.raises(BlockedUrl) as refused:
        await get(f"{standin.base_url}/redirect?to={location}", policy)
    assert refused.value.url == location


async def test_five_redirects_are_followed_and_the_sixth_is_not(standin: SearchStandin, policy: SsrfPolicy) -> None:
    result = await get(f"{standin.base_url}/redirect-chain/5", policy)
    assert result.status == 200 and result.final_url == f"{standin.base_url}/pages/article.html"

    with pytest.raises(FetchError, match="redirected more than 5 times"):
        await get(f"{standin.base_url}/redirect-chain/6", policy)


async def test_the_size_cap_is_enforced(standin: SearchStandin, policy: SsrfPolicy) -> None:
    with pytest.raises(FetchError, match="larger than the 100000 byte limit"):
        await get(f"{standin.base_url}/pages/large.html", policy, max_bytes=100_000)


async def test_the_timeout_covers_the_whole_fetch(standin: SearchStandin, policy: SsrfPolicy) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(FetchError, match=r"took longer than 0\.5 s"):
        await get(f"{standin.base_url}/slow?seconds=3", policy, timeout=0.5)
    assert asyncio.get_running_loop().time() - started < 2


async def test_the_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard resolves a name once and the socket connects to that very address, while the request still
    names the host: a name only the guard's resolver knows reaches a server bound to 127.0.0.2 alone."""
    server = SearchStandin(host="127.0.0.2").start()
    try:
        loop = asyncio.get_running_loop()
        lookups: list[str] = []

        async def resolver(host: str, port: int, **_: Any) -> list[Any]:
            lookups.append(host)
            if host != "pinned.standin.test":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]

        monkeypatch.setattr(loop, "getaddrinfo", resolver)
        allowed = SsrfPolicy.parse([f"127.0.0.2:{server.port}"])
        result = await get(f"http://pinned.standin.test:{server.port}/echo", allowed)
        assert result.status == 200
        assert result.body == f'{{"host": "pinned.standin.test:{server.port}", "reached": "127.0.0.2"}}'.encode()
        assert lookups == ["pinned.standin.test"]

        # The same name on a port that isn't allowed: the address it resolves to is judged, not the name.
        with pytest.raises(BlockedUrl, match=r"pinned.standin.test \(127.0.0.2\) is a loopback address"):
            await get(f"http://pinned.standin.test:{free_port()}/echo", allowed)
    finally:
        server.stop()


async def test_an_allow_listed_hostname_may_resolve_anywhere(standin: SearchStandin) -> None:
    result = await get(f"http://localhost:{standin.port}/echo", SsrfPolicy.parse([f"localhost:{standin.port}"]))
    assert result.status == 200


@pytest.mark.parametrize("spelling", [
    "127.0.0.1", "2130706433", "0x7f.1", "0x7F.0.0.1", "0177.0.0.1", "0177.1", "127.1", "127.0.1", "0x7f000001",
    "017700000001", "10.1", "192.168.0x1", "1.2.3.4", "0", "0x", "00", "4294967295", "4294967296", "256.0.0.1",
    "1.2.3.4.5", "1..2", "", "08.1.1.1", "0x1g.1", "1.2.3.", "example.com", "-1.2.3.4",
])
def test_odd_ipv4_spellings_are_read_as_inet_aton_reads_them(spelling: str) -> None:
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(spelling))
    except OSError:
        expected = None
    assert parse_ipv4_like(spelling) == expected


@pytest.mark.parametrize("entries", [["10.0.0.0/8"], ["[::1]:8080"], ["internal.example:443", "192.168.0.0/16"]])
def test_allow_list_entries_parse(entries: list[str]) -> None:
    policy = SsrfPolicy.parse(entries)
    assert len(policy.allowed_hosts) + len(policy.allowed_networks) == len(entries)
