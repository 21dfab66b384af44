"""A TCP proxy between the connector and the emulator that breaks connections on purpose.

It reads each HTTP request whole (so a rule can see the statement in it) and
then, as the rule says: passes it; resets the connection before sending it
(the request is lost); sends half of it and resets (lost mid-request);
sends it and resets the connection when the reply starts to come back (the
server did the work, the client never hears of it: the ambiguous case); or
passes the first bytes of the reply and then resets (a reply cut off
mid-body: the connector raises ChunkedEncodingError). ``silent`` makes the
network go quiet: connections are accepted, requests read, nothing answered, and
what was sent into the silence is never delivered.
A reset is a real TCP RST (SO_LINGER 0), as a load balancer or NAT would send.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

PASS, LOSE, HALF, NO_REPLY, CUT = "pass", "lose", "half", "no_reply", "cut"


@dataclass(frozen=True)
class Request:
    path: str
    sql: str | None  # the statement of a query request
    token: str = ""  # the session it belongs to
    tag: str = ""  # a sign-in's QUERY_TAG (the service tags its sessions: control, worker-N, sql)

    @property
    def verb(self) -> str:
        return (self.sql or "").lstrip().split(None, 1)[0].upper() if self.sql else ""

    @property
    def statement(self) -> str:
        """The SQL without its leading comments (sql/'s files carry them)."""
        return _COMMENTS.sub("", self.sql or "").lstrip()


_COMMENTS = re.compile(r"^\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*", re.DOTALL)


Rule = Callable[[Request], str]


def random_rule(seed: int, p_lose: float, p_half: float, p_no_reply: float) -> Rule:
    rng = random.Random(seed)
    lock = threading.Lock()

    def rule(req: Request) -> str:
        with lock:
            r = rng.random()
        if r < p_lose:
            return LOSE
        if r < p_lose + p_half:
            return HALF
        if r < p_lose + p_half + p_no_reply:
            return NO_REPLY
        return PASS

    return rule


def _reset(sock: socket.socket) -> None:
    """Send a RST. SHUT_RD first wakes a thread blocked in recv on this socket (a bare
    close would wait for it, and no RST would go out until it returned)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _read_request(sock: socket.socket, buf: bytearray) -> bytes | None:
    """One whole HTTP/1.1 request (Content-Length framed), or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head_end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buf[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(buf) < head_end + length:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    request = bytes(buf[: head_end + length])
    del buf[: head_end + length]
    return request


def _describe(request: bytes) -> Request:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    path = lines[0].split(b" ")[1].decode(errors="replace") if b" " in lines[0] else ""
    sql = None
    token = tag = ""
    for ln in lines[1:]:
        if ln.lower().startswith(b"authorization:"):
            token = ln.split(b"=", 1)[-1].strip(b' "').decode(errors="replace")
    gzipped = any(ln.lower().startswith(b"content-encoding: gzip") for ln in lines)
    if body and ("/queries/v1/query-request" in path or "/login-request" in path):
        try:
            data = json.loads(gzip.decompress(body) if gzipped else body)
        except (OSError, ValueError):
            data = {}
        if "/login-request" in path:
            params = (data.get("data") or {}).get("SESSION_PARAMETERS") or {}
            tag = str(params.get("QUERY_TAG", ""))
        else:
            sql = data.get("sqlText")
    return Request(path.split("?")[0], sql, token, tag)


class FaultProxy:
    """127.0.0.1:<port> -> upstream; ``counts`` says what it did, by action and statement."""

    def __init__(self, upstream_port: int, rule: Rule) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.rule = rule
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        #: While set, nothing is forwarded or answered (requests are held unanswered and
        #: then dropped: a blackhole, as a network partition is).
        self.silent = threading.Event()
        #: Requests seen (every one, faulted or passed).
        self.requests = 0

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._accept, name="faultproxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        _reset(self._listener)

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
        except OSError:
            _reset(client)
            return
        broken = threading.Event()
        no_reply = threading.Event()
        cut = threading.Event()
        threading.Thread(
            target=self._replies, args=(server, client, broken, no_reply, cut), daemon=True
        ).start()
        buf = bytearray()
        try:
            while not broken.is_set():
                request = _read_request(client, buf)
                if request is None:
                    break
                req = _describe(request)
                if self.silent.is_set():
                    # A network gone quiet drops what is sent into it: hold the
                    # connection open, unanswered, and never deliver the request.
                    while self.silent.is_set() and not self._stop.is_set():
                        time.sleep(0.05)
                    break
                action = self.rule(req)
                self._count_request()
                if action != PASS:
                    self._count(f"{action} {req.verb or req.path}")
                if action == LOSE:
                    break
                if action == HALF:
                    server.sendall(request[: max(1, len(request) // 2)])
                    time.sleep(0.05)
                    break
                if action == NO_REPLY:
                    no_reply.set()
                elif action == CUT:
                    cut.set()
                server.sendall(request)
        except OSError:
            pass
        broken.set()
        _reset(client)
        _reset(server)

    def _replies(
        self,
        server: socket.socket,
        client: socket.socket,
        broken: threading.Event,
        no_reply: threading.Event,
        cut: threading.Event,
    ) -> None:
        try:
            while not broken.is_set():
                data = server.recv(65536)
                if not data:
                    break
                if no_reply.is_set():  # the server has answered: the work is done
                    break
                if cut.is_set():  # the headers and a little of the body, then a reset
                    client.sendall(data[: max(1, min(len(data) - 1, 300))])
                    break
                client.sendall(data)
        except OSError:
            pass
        broken.set()
        _reset(client)
        _reset(server)
