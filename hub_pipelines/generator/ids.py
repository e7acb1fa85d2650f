"""Deterministic identifiers, vectorised: UUIDs and hex ids derived from (seed, namespace, number).

Ids are a pure function of the simulation, so the same config writes the same ids, and an event's
id does not depend on which file or in which order it is written.
"""

from __future__ import annotations

import hashlib

import numpy as np

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_U64 = np.uint64


def namespace_key(seed: int, namespace: str) -> np.uint64:
    digest = hashlib.blake2b(f"{seed}:{namespace}".encode(), digest_size=8).digest()
    return _U64(int.from_bytes(digest, "big"))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters consecutive numbers."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> _U64(30)
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


def _random_words(seed: int, namespace: str, numbers: np.ndarray, words: int) -> np.ndarray:
    base = np.asarray(numbers, dtype=np.int64).astype(np.uint64) * _U64(words) + namespace_key(
        seed, namespace
    )
    return np.stack([mix64(base + _U64(w)) for w in range(words)], axis=1)


def _hex_rows(words: np.ndarray) -> np.ndarray:
    """(n, k) uint64 -> (n, 16k) ASCII hex digits, big-endian."""
    raw = words.astype(">u8").view(np.uint8).reshape(len(words), -1)
    out = np.empty((len(words), raw.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 15]
    return out


def _split_fixed(chars: np.ndarray) -> list[str]:
    """(n, w) ASCII bytes -> n str of width w (one decode, then slicing: the fastest way to get
    Python strings out of numpy)."""
    n, width = chars.shape
    text = np.ascontiguousarray(chars).tobytes().decode("ascii")
    return [text[i : i + width] for i in range(0, n * width, width)]


def uuids(seed: int, namespace: str, numbers: np.ndarray) -> list[str]:
    """Random-looking version-4 UUIDs, one per number."""
    if len(numbers) == 0:
        return []
    words = _random_words(seed, namespace, numbers, 2)
    words[:, 0] = (words[:, 0] & ~_U64(0xF000)) | _U64(0x4000)  # version 4
    words[:, 1] = (words[:, 1] & ~(_U64(0xC0) << _U64(56))) | (_U64(0x80) << _U64(56))  # RFC 4122 variant
    digits = _hex_rows(words)
    out = np.full((len(words), 36), ord("-"), dtype=np.uint8)
    out[:, 0:8] = digits[:, 0:8]
    out[:, 9:13] = digits[:, 8:12]
    out[:, 14:18] = digits[:, 12:16]
    out[:, 19:23] = digits[:, 16:20]
    out[:, 24:36] = digits[:, 20:32]
    return _split_fixed(out)


def hex_ids(seed: int, namespace: str, numbers: np.ndarray, prefix: str) -> list[str]:
    """`prefix` + 16 hex digits, one per number."""
    if len(numbers) == 0:
        return []
    digits = _hex_rows(_random_words(seed, namespace, numbers, 1))
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    out = np.empty((len(digits), len(head) + 16), dtype=np.uint8)
    out[:, : len(head)] = head
    out[:, len(head) :] = digits
    return _split_fixed(out)
