"""Which requests cut short a stream on a single-slot llama.cpp server (issue 16, point 7).

Start a server, then: python benchmarks/llm_slot_probe.py [http://127.0.0.1:18780]
Each line streams 300 tokens; at the 20th it sends one probe (none, GET /health, a TCP
connect, GET /props, GET /v1/models) and prints how many chunks arrived and in what time.
On llama-cpp-python 0.3.36 only GET /v1/models cuts the stream (29 of 300 chunks).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18780"


async def stream_with(probe: str | None) -> tuple[int, str, float]:
    body = {
        "model": "smollm2",
        "stream": True,
        "max_tokens": 300,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
    }
    chunks, finish = 0, ""
    async with httpx.AsyncClient(timeout=300) as http:
        async with http.stream("POST", BASE + "/v1/chat/completions", json=body) as r:
            probed = False
            started = time.monotonic()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                ch = data["choices"][0]
                if ch.get("delta", {}).get("content"):
                    chunks += 1
                finish = ch.get("finish_reason") or finish
                if chunks == 20 and probe and not probed:
                    probed = True
                    async with httpx.AsyncClient(timeout=30) as p:
                        if probe == "tcp":
                            _, writer = await asyncio.open_connection(
                                *BASE.split("//")[1].split(":")
                            )
                            writer.close()
                        else:
                            await p.get(BASE + probe)
    return chunks, finish, time.monotonic() - started


async def main():
    for probe in (None, "/health", "tcp", "/props", "/v1/models"):
        chunks, finish, secs = await stream_with(probe)
        print(
            f"probe {probe!s:<11} -> {chunks:4d} chunks, finish_reason={finish!r}, {secs:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
