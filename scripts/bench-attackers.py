#!/usr/bin/env python3
"""Hostile peers for `scripts/bench frontdoor`: slow connections, garbage
POSTs and wrong passwords against one server until SIGTERM, then a
summary of what the server answered them.

usage: bench-attackers.py HOST PORT SLOW_CONNECTIONS
"""
import asyncio
import base64
import collections
import os
import signal
import ssl
import sys

HOST, PORT, SLOW = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
FLOODERS = 8
counts = collections.Counter()


def tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def silent():
    """Connects and says nothing, again whenever the server cuts it."""
    while True:
        try:
            r, w = await asyncio.open_connection(HOST, PORT)
            await r.read()
            counts["silent connections cut"] += 1
            w.close()
        except OSError:
            counts["slow connections refused"] += 1
            await asyncio.sleep(0.5)


async def trickle():
    """Completes TLS, then sends a header line a second, forever."""
    while True:
        try:
            r, w = await asyncio.open_connection(HOST, PORT, ssl=tls())
            w.write(b"POST /penguindome/v1/submit HTTP/1.1\r\nhost: x\r\n")
            while True:
                await asyncio.sleep(1)
                w.write(b"x-slow: 1\r\n")
                await w.drain()
        except (OSError, ssl.SSLError, ConnectionError):
            counts["trickling connections cut"] += 1
            await asyncio.sleep(0.1)


async def request(head, body=b""):
    r, w = await asyncio.open_connection(HOST, PORT, ssl=tls())
    w.write(head + body)
    await w.drain()
    status = (await r.readline()).split(b" ")[1].decode()
    w.close()
    return status


async def garbage():
    """Posts 64 KiB of noise under a signature header of noise."""
    while True:
        sig = base64.b64encode(os.urandom(120)).decode()
        body = os.urandom(64 * 1024)
        head = (f"POST /penguindome/v1/submit HTTP/1.1\r\nhost: x\r\n"
                f"penguindome-signature: {sig}\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n").encode()
        try:
            counts[f"garbage POSTs answered {await request(head, body)}"] += 1
        except (OSError, ssl.SSLError, ConnectionError, IndexError):
            counts["garbage POSTs cut"] += 1


async def passwords():
    """Asks for the repository with a new wrong password each time."""
    n = 0
    while True:
        n += 1
        cred = base64.b64encode(f"agent:wrong-{os.getpid()}-{n}".encode()).decode()
        head = (f"GET /penguindome/v1/repo/deb/dists/penguindome/InRelease HTTP/1.1\r\n"
                f"host: x\r\nauthorization: Basic {cred}\r\nconnection: close\r\n\r\n").encode()
        try:
            counts[f"wrong passwords answered {await request(head)}"] += 1
        except (OSError, ssl.SSLError, ConnectionError, IndexError):
            counts["wrong passwords cut"] += 1


async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(silent()) for _ in range(SLOW // 2)]
    tasks += [asyncio.create_task(trickle()) for _ in range(SLOW - SLOW // 2)]
    tasks += [asyncio.create_task(garbage()) for _ in range(FLOODERS)]
    tasks += [asyncio.create_task(passwords()) for _ in range(FLOODERS)]
    await stop.wait()
    for t in tasks:
        t.cancel()
    for what, n in sorted(counts.items()):
        print(f"  {what}: {n}")


asyncio.run(main())
