"""The MCP stdio transport answers every message it cannot pass on (JSON-RPC 2.0), bounded.

Unit cases of the screening, then a fuzz run against the real server process: raw bytes on its
stdin (broken JSON, wrong envelopes and types, huge, deep and surrogate payloads, batches,
notifications), where every message with an id gets exactly one answer and the server keeps
answering. Deterministic (fixed seed) and bounded in count."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, cli_env

PARSE, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


def _screen(raw: str | bytes) -> Any:
    from app.mcp_transport import screen_line

    return screen_line(raw.encode() if isinstance(raw, str) else raw)


@pytest.mark.parametrize(
    ("raw", "code", "reply_id"),
    [
        ("{broken", PARSE, None),
        (b"\xff\xfe{}", PARSE, None),
        ("[]", INVALID_REQUEST, None),
        ('"text"', INVALID_REQUEST, None),
        ("null", INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":2}', INVALID_REQUEST, 2),
        ('{"jsonrpc":"1.0","id":3,"method":"ping"}', INVALID_REQUEST, 3),
        ('{"id":3,"method":"ping"}', INVALID_REQUEST, 3),
        ('{"jsonrpc":"2.0","id":4,"method":5}', INVALID_REQUEST, 4),
        ('{"jsonrpc":"2.0","id":"s","method":""}', INVALID_REQUEST, "s"),
        ('{"jsonrpc":"2.0","id":5,"method":"ping","params":5}', INVALID_REQUEST, 5),
        ('{"jsonrpc":"2.0","id":6,"method":"ping","params":[1]}', INVALID_PARAMS, 6),
        ('{"jsonrpc":"2.0","id":10.5,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":null,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":[1],"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","method":5}', INVALID_REQUEST, None),  # not even a notification
        (
            '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"query_rag",'
            '"arguments":{"query":"abc\\ud83d"}}}',
            INVALID_PARAMS,
            7,
        ),  # fmt: skip
        ('{"jsonrpc":"2.0","id":8,"method":"x\\udc00"}', INVALID_REQUEST, 8),
        (
            '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"\\ud800":1}}',
            INVALID_PARAMS,
            9,
        ),  # fmt: skip
        ('{"jsonrpc":"2.0","id":10,"result":{}, "error":5}', None, None),  # a response: the SDK's
    ],
)
def test_screening_answers_per_json_rpc(raw: str, code: int | None, reply_id: Any) -> None:
    verdict = _screen(raw)
    if code is None:
        assert verdict.reply is None
        return
    assert verdict.message is None
    assert isinstance(verdict.reply, dict), verdict
    assert verdict.reply["error"]["code"] == code, verdict.reply
    assert verdict.reply["id"] == reply_id and verdict.reply["jsonrpc"] == "2.0"
    assert "\n" not in verdict.reply["error"]["message"]


def test_deep_and_valid_messages() -> None:
    from app.mcp_transport import MAX_DEPTH

    def nested(depth: int) -> str:
        return '{"a":' * depth + "1" + "}" * depth

    ok = _screen('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_rag",'
                 f'"arguments":{{"metadata":{nested(MAX_DEPTH - 5)}}}}}}}')  # fmt: skip
    assert ok.message is not None and ok.reply is None
    deep = _screen('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query_rag",'
                   f'"arguments":{{"metadata":{nested(200)}}}}}}}')  # fmt: skip
    assert deep.reply["error"]["code"] == INVALID_PARAMS and deep.reply["id"] == 2
    assert "nested deeper than" in deep.reply["error"]["message"]
    huge = _screen("[" * 200_000 + "]" * 200_000)  # past Python's recursion limit
    assert huge.reply["error"]["code"] == INVALID_REQUEST and huge.reply["id"] is None
    note = _screen('{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert note.message is not None and note.reply is None
    bad_note = _screen('{"jsonrpc":"2.0","method":"notifications/x","params":{"a":"\\ud83d"}}')
    assert bad_note.reply is None and bad_note.message is None and bad_note.note


def test_batches_are_refused_request_by_request() -> None:
    verdict = _screen(json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "two", "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3.5, "method": "ping"},
        7,
    ]))  # fmt: skip
    assert isinstance(verdict.reply, list)
    assert [(r["id"], r["error"]["code"]) for r in verdict.reply] == [
        (1, INVALID_REQUEST), ("two", INVALID_REQUEST), (None, INVALID_REQUEST),
        (None, INVALID_REQUEST),
    ]  # fmt: skip
    assert "batches are not supported" in verdict.reply[0]["error"]["message"]
    only_notes = _screen('[{"jsonrpc":"2.0","method":"notifications/initialized"}]')
    assert only_notes.reply is None


async def test_lines_are_bounded_and_split() -> None:
    from app import mcp_transport

    read_fd, write_fd = os.pipe()
    payload = b'{"a":1}\r\n\n' + b"x" * 300 + b"\n" + b'{"b":2}'
    sent: list[Any] = []

    class Sink:
        async def send(self, item: Any) -> None:
            sent.append(item)

    def feed() -> None:
        os.write(write_fd, payload)
        os.close(write_fd)

    old = mcp_transport.MAX_LINE_BYTES
    mcp_transport.MAX_LINE_BYTES = 100
    try:
        threading.Thread(target=feed).start()
        lines = [line async for line in mcp_transport._lines(read_fd, Sink())]
    finally:
        mcp_transport.MAX_LINE_BYTES = old
        os.close(read_fd)
    assert lines == [b'{"a":1}', b'{"b":2}']
    assert len(sent) == 1 and "longer than 100 bytes" in sent[0]["error"]["message"]


# ---------------------------------------------------------------------------------- fuzz
SEED = 1313
FUZZ_MESSAGES = 400


@dataclass
class Expect:
    """What the fuzz run must see answered."""

    ids: dict[Any, set[int]] = field(default_factory=dict)  # id -> acceptable error codes
    ok_ids: set[Any] = field(default_factory=set)  # ids that may also get a result
    null_replies: int = 0  # invalid messages without a usable id

    def request(self, msg_id: Any, *codes: int, ok: bool = False) -> None:
        assert msg_id not in self.ids
        self.ids[msg_id] = set(codes)
        if ok:
            self.ok_ids.add(msg_id)


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0
        self.expect = Expect()

    def new_id(self) -> Any:
        self.n += 1
        return self.n if self.rng.random() < 0.5 else f"fz-{self.n}"

    def line(self) -> bytes:
        kind = self.rng.choice([
            self.valid, self.tool_call, self.broken_json, self.not_utf8, self.bad_envelope,
            self.bad_id, self.surrogate, self.deep, self.batch, self.notification,
            self.huge_argument, self.params_array,
        ])  # fmt: skip
        return kind()

    @staticmethod
    def dump(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def valid(self) -> bytes:
        msg_id = self.new_id()
        method = self.rng.choice(["ping", "tools/list", "no/such/method"])
        self.expect.request(msg_id, METHOD_NOT_FOUND, ok=method != "no/such/method")
        return self.dump({"jsonrpc": "2.0", "id": msg_id, "method": method})

    def tool_call(self) -> bytes:
        msg_id = self.new_id()
        name = self.rng.choice(["query_rag", "get_rag_stats", "no_such_tool", 5, None])
        junk = self.rng.choice([{"query": 5}, {"query": ""}, {"limit": -1}, {"nope": 1}, [],
                                "text", {"query": "x" * 5000}, {"query": "dns\u0000"}])  # fmt: skip
        self.expect.request(msg_id, INVALID_PARAMS, INVALID_REQUEST, ok=True)
        params = {"name": name, "arguments": junk}
        return self.dump({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call",
                          "params": params})  # fmt: skip

    def broken_json(self) -> bytes:
        msg_id = self.new_id()
        text = self.dump({"jsonrpc": "2.0", "id": msg_id, "method": "ping"})
        cut = self.rng.randrange(1, len(text) - 1)
        self.expect.null_replies += 1
        return text[:cut] + self.rng.choice([b"", b"}}", b",", b"\\", b'"'])

    def not_utf8(self) -> bytes:
        self.expect.null_replies += 1
        return b'{"jsonrpc":"2.0","id":1,"method":"' + bytes([0xC3, 0x28, 0xFF]) + b'"}'

    def bad_envelope(self) -> bytes:
        msg_id = self.new_id()
        variants = [
            {"jsonrpc": "1.0", "id": msg_id, "method": "ping"},
            {"jsonrpc": 2.0, "id": msg_id, "method": "ping"},
            {"id": msg_id, "method": "ping"},
            {"jsonrpc": "2.0", "id": msg_id, "method": ["ping"]},
            {"jsonrpc": "2.0", "id": msg_id},
            {"jsonrpc": "2.0", "id": msg_id, "method": "ping", "params": "x"},
            {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": {"name": {}}},
        ]
        self.expect.request(msg_id, INVALID_REQUEST, INVALID_PARAMS)
        return self.dump(self.rng.choice(variants))

    def bad_id(self) -> bytes:
        self.expect.null_replies += 1
        bad = self.rng.choice([1.5, True, None, [1], {"a": 1}, -0.0])
        return self.dump({"jsonrpc": "2.0", "id": bad, "method": "ping"})

    def surrogate(self) -> bytes:
        msg_id = self.new_id()
        lone = self.rng.choice(["\\ud83d", "\\udc00", "a\\ud800b"])
        self.expect.request(msg_id, INVALID_PARAMS)
        return (
            f'{{"jsonrpc":"2.0","id":{json.dumps(msg_id)},"method":"tools/call","params":'
            f'{{"name":"query_rag","arguments":{{"query":"{lone}"}}}}}}'
        ).encode()

    def deep(self) -> bytes:
        msg_id = self.new_id()
        depth = self.rng.choice([80, 200, 500, 50_000])
        nested = '{"a":' * depth + "1" + "}" * depth
        if depth >= 50_000:
            self.expect.null_replies += 1  # past the recursion limit: no id can be read
        else:
            self.expect.request(msg_id, INVALID_PARAMS)
        return (
            f'{{"jsonrpc":"2.0","id":{json.dumps(msg_id)},"method":"tools/call","params":'
            f'{{"name":"query_rag","arguments":{{"metadata":{nested}}}}}}}'
        ).encode()

    def batch(self) -> bytes:
        items: list[Any] = []
        for _ in range(self.rng.randrange(1, 4)):
            msg_id = self.new_id()
            items.append({"jsonrpc": "2.0", "id": msg_id, "method": "ping"})
            self.expect.request(msg_id, INVALID_REQUEST)
        items.append({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self.dump(items)

    def notification(self) -> bytes:
        return self.dump(self.rng.choice([
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 999}},
            {"jsonrpc": "2.0", "method": "notifications/no-such"},
            {"jsonrpc": "2.0", "method": "notifications/x", "params": {"a": "\ud83d"}},
        ]))  # fmt: skip

    def huge_argument(self) -> bytes:
        msg_id = self.new_id()
        self.expect.request(msg_id, INVALID_PARAMS, ok=True)  # a tool error result
        return self.dump({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call",
                          "params": {"name": "query_rag",
                                     "arguments": {"query": "q" * 2_000_000}}})  # fmt: skip

    def params_array(self) -> bytes:
        msg_id = self.new_id()
        self.expect.request(msg_id, INVALID_PARAMS)
        return self.dump({"jsonrpc": "2.0", "id": msg_id, "method": "tools/list", "params": []})


class Wire:
    """The server process; a thread collects every line it writes."""

    def __init__(self, env: dict[str, str], stderr: Path) -> None:
        self.errlog = stderr.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.mcp_server"], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog,
        )  # fmt: skip
        self.replies: list[Any] = []
        self.bad_lines: list[bytes] = []
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                self.bad_lines.append(line)
                continue
            with self.lock:
                self.replies.append(reply)
                self.lock.notify_all()

    def send(self, raw: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(raw + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, msg_id: Any, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        with self.lock:
            while True:
                for reply in _flatten(self.replies):
                    if reply.get("id") == msg_id:
                        return reply
                left = deadline - time.monotonic()
                assert left > 0, f"no answer to {msg_id!r}"
                self.lock.wait(left)

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=120)
        self.errlog.close()
        return code


def _flatten(replies: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for reply in replies:
        out.extend(reply if isinstance(reply, list) else [reply])
    return out


def test_fuzzed_stdio_input_always_gets_an_answer(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    wire = Wire(cli_env(db_url, QWB_CONFIG=str(config)), tmp_path / "stderr.log")
    try:
        wire.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "1"}}}).encode())  # fmt: skip
        assert "result" in wire.wait_for("init", 120)
        wire.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        fuzz = Fuzzer(SEED)
        started = time.perf_counter()
        for n in range(FUZZ_MESSAGES):
            wire.send(fuzz.line())
            if n % 50 == 49:  # the server keeps answering along the way
                wire.send(json.dumps({"jsonrpc": "2.0", "id": f"alive-{n}",
                                      "method": "ping"}).encode())  # fmt: skip
                assert wire.wait_for(f"alive-{n}", 300)["result"] == {}
        wire.send(b"x" * (9 * 1024 * 1024))  # longer than a line may be: refused unread
        fuzz.expect.null_replies += 1
        wire.send(json.dumps({"jsonrpc": "2.0", "id": "final", "method": "tools/list"}).encode())
        assert wire.wait_for("final", 300)["result"]["tools"]
        for msg_id in fuzz.expect.ids:  # tool calls may finish after "final"
            wire.wait_for(msg_id, 300)
        elapsed = time.perf_counter() - started
    finally:
        code = wire.close()
    print(f"\nfuzz: {FUZZ_MESSAGES} messages answered in {elapsed:.1f} s")
    assert code == 0
    assert not wire.bad_lines  # stdout carried JSON only
    replies = _flatten(wire.replies)
    by_id: dict[Any, list[dict[str, Any]]] = {}
    for reply in replies:
        by_id.setdefault(reply.get("id"), []).append(reply)
    for msg_id, codes in fuzz.expect.ids.items():
        got = by_id.get(msg_id, [])
        assert len(got) == 1, (msg_id, got)  # exactly one answer each
        reply = got[0]
        if "error" in reply:
            assert reply["error"]["code"] in codes, (msg_id, reply)
        else:
            assert msg_id in fuzz.expect.ok_ids, (msg_id, reply)
    nulls = by_id.get(None, [])
    assert len(nulls) == fuzz.expect.null_replies, nulls[:5]
    assert all(r["error"]["code"] in (PARSE, INVALID_REQUEST) for r in nulls)
    log = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in log, log[-3000:]
