"""``host:port`` strings as Toxiproxy spells them, and the loopback-only listen policy.

Local mode binds only loopback addresses. A wildcard listen address (the unspecified IPv4 or
IPv6 address, ``:N`` or empty; chaostoolkit-toxiproxy sends the IPv4 wildcard by default) binds
the loopback address of the same family instead; a specific non-loopback address is refused
with a 400 naming the rule.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from chaos.proxy.errors import ListenAddressError


def split_host_port(addr: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` / ``:port``; ValueError with Go's wording when malformed."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise ValueError(f"address {addr}: missing ']' in address")
        host, rest = addr[1:end], addr[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"address {addr}: missing port in address")
        port_text = rest[1:]
    else:
        host, sep, port_text = addr.rpartition(":")
        if not sep:
            raise ValueError(f"address {addr}: missing port in address")
        if ":" in host:
            raise ValueError(f"address {addr}: too many colons in address")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"address {addr}: invalid port {port_text!r}")
    return host, int(port_text)


def format_addr(host: str, port: int) -> str:
    """``127.0.0.1:8474`` or ``[::1]:8474``, as Go's net.Addr.String() prints them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve_listen(addr: str) -> tuple[str, int]:
    """The loopback (host, port) to bind for a proxy listen address, or a ListenAddressError."""
    if addr == "":
        return "127.0.0.1", 0
    try:
        host, port = split_host_port(addr)
    except ValueError as exc:
        raise ListenAddressError(str(exc)) from None
    if host == "":
        return "127.0.0.1", port
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:  # wildcard: bind loopback of the same family
        return ("::1" if ip.version == 6 else "127.0.0.1"), port
    if ip is None:  # a host name: it must resolve to loopback (IPv4 first, as Go prefers)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ListenAddressError(f"listen tcp {addr}: lookup {host}: {exc}") from None
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        ip = ipaddress.ip_address(infos[0][4][0])
    if not ip.is_loopback:
        raise ListenAddressError(
            f"listen address {addr} is not a loopback address: this fault proxy binds only 127.0.0.1 or "
            "::1 (wildcard addresses are bound as loopback); use e.g. 127.0.0.1:0")
    return str(ip), port


async def canonical_listen(addr: str) -> str:
    """The listen address as the proxy would report it once bound (port 0 stays 0)."""
    return format_addr(*await resolve_listen(addr))
