"""Counter-based noise: one uniform per (seed, sequence id, step), the same on every device, batch and process.

Reproducibility: a sequence's random draw at a step depends only on (seed, sequence id, step),
never on which other sequences share the batch. Each sequence gets ONE uniform per step, a pure integer function of
those three values, computed vectorized in torch (the sampler's Triton kernel computes the same function and is
tested equal to `uniforms` here).

- `seed_key(seed)`: every bit of any Python int seed (negative, or larger than 64 bits) goes through blake2b of
  the int's minimal signed little-endian encoding, so distinct seeds give distinct 64-bit keys (up to a 2^-64
  collision chance). The old rule folded the seed to 32 bits by XOR, so -1, 2**32 + 1 and 2**64 drew exactly seed
  0's samples.
- `sequence_id(key, sample_index)`: a stable 63-bit hash of (node key, sample index).
- `uniforms(key, seq_ids, step)`: MurmurHash3 (x86, 32-bit) of the four 32-bit words (id low, id high, step low,
  step high), once seeded with the key's low word and once with its high word; the two 32-bit hashes give 53
  bits, centred in their cell so the uniform is never exactly 0 or 1.

All arithmetic is on int64 tensors holding values in [0, 2^32); products are split (`_mul32`) so that no
intermediate exceeds 2^49 and nothing relies on signed overflow, so CPU and CUDA agree bit for bit.
"""
from __future__ import annotations

import hashlib

import torch

MASK32 = 0xFFFFFFFF
_SEED_DOMAIN = b"prompt-tree/seed/v1"
# MurmurHash3 x86_32 constants
C1, C2 = 0xCC9E2D51, 0x1B873593
N_ADD = 0xE6546B64
F1, F2 = 0x85EBCA6B, 0xC2B2AE35
N_WORDS = 4  # words hashed per draw: seq id (2) and step (2)


def seed_key(seed: int) -> tuple[int, int]:
    """The 64-bit key of a seed, as (low 32 bits, high 32 bits). seed: any int (not bool)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    # minimal two's-complement length: 0 -> 1 byte, -1 -> 1 byte (0xff), 2**64 -> 9 bytes; injective on ints
    raw = seed.to_bytes(seed.bit_length() // 8 + 1, "little", signed=True)
    key = int.from_bytes(hashlib.blake2b(_SEED_DOMAIN + raw, digest_size=8).digest(), "little")
    return key & MASK32, key >> 32


def sequence_id(key, sample_index: int) -> int:
    """A stable 63-bit id of (node key, sample index): the same in every tree, batch and process.

    63 bits (not the 31 of before) make two samples of one node sharing an id, hence all their noise, a 2^-63
    event per pair instead of 2^-31."""
    digest = hashlib.blake2b(repr((key, int(sample_index))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _mul32(a, c: int):
    """(a * c) mod 2^32 for a in [0, 2^32) and a 32-bit constant c, without an intermediate above 2^49."""
    return (a * (c & 0xFFFF) + (((a * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def _rotl32(x, r: int):
    return ((x << r) | (x >> (32 - r))) & MASK32


def _murmur3_words(words, seed: int):
    """MurmurHash3 x86_32 of N_WORDS 32-bit words (int64 tensors or ints in [0, 2^32)) with a 32-bit seed."""
    h = seed
    for w in words:
        k = _mul32(w, C1)
        k = _rotl32(k, 15)
        k = _mul32(k, C2)
        h = h ^ k
        h = _rotl32(h, 13)
        h = (h * 5 + N_ADD) & MASK32
    h = h ^ (4 * N_WORDS)
    h = h ^ (h >> 16)
    h = _mul32(h, F1)
    h = h ^ (h >> 13)
    h = _mul32(h, F2)
    return h ^ (h >> 16)


def uniforms(key: tuple[int, int], seq_ids: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
    """One uniform in (0, 1) per sequence, a pure function of (key, seq id, step).

    key: `seed_key(seed)`; seq_ids: [B] int64 (non-negative); step: a non-negative int, or an int64 tensor of shape
    [] or [B] (each sequence's own step). Returns [B] fp64 on seq_ids' device. With a tensor step nothing is copied
    from the host, so the call can be captured in a CUDA graph (an int step would be baked into the graph).
    """
    if not (isinstance(key, tuple) and len(key) == 2):
        raise TypeError(f"uniforms: key must be seed_key(seed), a pair of 32-bit ints, got {key!r}")
    seq_ids = seq_ids.to(torch.int64)
    if isinstance(step, torch.Tensor):
        step = step.to(device=seq_ids.device, dtype=torch.int64)
        words_step = (step & MASK32, (step >> 32) & MASK32)
    else:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        words_step = (step & MASK32, (step >> 32) & MASK32)
    words = (seq_ids & MASK32, (seq_ids >> 32) & MASK32) + words_step
    lo, hi = key
    x = _murmur3_words(words, lo)
    y = _murmur3_words(words, hi)
    bits = ((x << 21) ^ (y >> 11)) & ((1 << 53) - 1)
    return (bits.to(torch.float64) + 0.5) / float(1 << 53)
