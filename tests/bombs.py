"""Decompression bombs for tests and benchmarks, written without ever holding their data.

`write_tar_bomb` makes a real gzip'd tar whose member holds `size` zero bytes (4 GiB takes a
few MB on disk and a fraction of a second to write): a 1 MiB block of zeros is deflated once
and repeated, and the gzip trailer's CRC-32 of all those zeros is computed algebraically."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Any

MIB = 1 << 20
_MASK = 0xFFFFFFFF


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32_then_zeros(crc: int, count: int) -> int:
    """zlib.crc32(data + b"\\0" * count) from crc = zlib.crc32(data), in O(log count)."""
    if count == 0:
        return crc
    register = crc ^ _MASK
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)  # eight bits = one byte, then doubling
        if count & 1:
            register = _gf2_times(even, register)
        count >>= 1
        if not count:
            break
        odd = _gf2_square(even)
        if count & 1:
            register = _gf2_times(odd, register)
        count >>= 1
        if not count:
            break
    return register ^ _MASK


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def write_tar_bomb(path: Path, size: int, *, name: str = "bomb.jsonl",
                   manifest: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """A gzip'd tar: [manifest.json,] then `name` holding `size` zero bytes, then the end."""
    prefix = b""
    if manifest is not None:
        data = json.dumps(manifest).encode()
        prefix += _header("manifest.json", len(data)) + data + b"\0" * (-len(data) % 512)
    prefix += _header(name, size)
    zeros = size + (-size % 512) + 1024  # the data, its padding, the two end blocks
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = block.compress(b"\0" * MIB) + block.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(zeros, MIB)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip header
        out.write(head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH))
        for _ in range(whole):
            out.write(repeated)
        out.write(tail.compress(b"\0" * rest) + tail.flush(zlib.Z_FINISH))
        crc = crc32_then_zeros(zlib.crc32(prefix), zeros)
        out.write(struct.pack("<II", crc, (len(prefix) + zeros) & _MASK))
    return path


def small_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
