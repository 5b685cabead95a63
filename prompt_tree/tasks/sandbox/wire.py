"""What crosses the sandbox's boundary, and how: JSON messages on a SOCK_SEQPACKET socket, file descriptors beside
them, and call-based return values in a typed JSON form.

Messages: one JSON object per packet (the packet boundary is the frame; nothing to parse for lengths), at most
MAX_MESSAGE bytes. Descriptors (a test's stdin, its output pipes) ride along as SCM_RIGHTS. The host reads every
packet the sandbox sends as hostile: `decode_message` raises ProtocolError for anything that is not a JSON object
of the expected size, and the host never accepts descriptors from the sandbox after the first, trusted message.

Values (call-based results and arguments): plain JSON loses what a verdict depends on (int dict keys become
strings; tuples and lists look alike, which APPS wants, so tuples do become lists). `encode_value` keeps dicts
as {"__dict__": [[key, value], ...]} with typed keys, ints of more than 4000-odd digits as {"__int__": hex}, turns numpy scalars and arrays into Python values
(`.tolist()`, so they compare by value), and refuses anything else (sets, custom objects): such a return value
is a wrong answer, never an object whose own __eq__ decides the verdict.

Stdlib only: used on both sides (prompt_tree.tasks.sandbox.runner inside, prompt_tree.tasks.sandbox.host outside).
"""
from __future__ import annotations

import array
import json
import os
import socket
import struct
import time

MAX_MESSAGE = 1 << 16  # bytes per control packet; results and inputs travel in pipes and memfds, not here
MAX_FDS = 4
DICT_TAG = "__dict__"
INT_TAG = "__int__"
# ints past this many bits travel as hex: Python refuses int <-> decimal str conversions beyond 4300 digits
# (sys.get_int_max_str_digits), hex has no such limit, and an APPS answer may well be a 5000-digit factorial
_BIG_INT_BITS = 14000
_MAX_DEPTH = 400  # nesting of a value: deeper return values are refused (json itself recurses per level)
_COLLIDING_KEYS = 64  # keys of a dict that may share a hash with another one (decode_value)


class ProtocolError(ValueError):
    """A packet that breaks the protocol: not JSON, not an object, too long, or not what was expected."""


class Unencodable(TypeError):
    """A value with no faithful JSON form (see the module docstring)."""


def send_message(sock: socket.socket, obj: dict, fds=()) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MESSAGE}-byte limit")
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(fds)))])
    else:
        sock.send(data)


def recv_message(sock: socket.socket, max_fds: int = 0):
    """(message dict, [fds]) of the next packet, or (None, []) at end of stream. Descriptors beyond max_fds are
    closed by the kernel (MSG_CTRUNC), so a sender cannot push descriptors into a receiver that wants none."""
    if max_fds:
        data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE + 1, max_fds)
    else:
        data, _, flags, _ = sock.recvmsg(MAX_MESSAGE + 1)
        fds = []
    if not data and not fds:
        return None, []
    try:
        return decode_message(data, truncated=bool(flags & socket.MSG_TRUNC)), fds
    except ProtocolError:
        for fd in fds:
            _close(fd)
        raise


# SO_TIMESTAMPNS / SCM_TIMESTAMPNS (asm-generic value: x86_64, aarch64, riscv64, ppc64le and s390x share it)
_SO_TIMESTAMPNS = 35
_STAMP = struct.Struct("qq")  # struct timespec


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp every packet `sock` receives with the time its sender sent it (for `recv_stamped`).
    False where the option is refused (the receiver then stamps packets with its own clock)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        return True
    except OSError:
        return False


def recv_stamped(sock: socket.socket):
    """(message dict or None at end of stream, when it was sent): a packet as `recv_message` reads it without
    descriptors, with the kernel's timestamp of its sending (time.time()'s clock) where `enable_timestamps`
    worked, else the time it was read here. The kernel stamps a unix-socket packet as the sender sends it, so
    a receiver that is slow to read (a busy host thread) still learns when the report was made."""
    room = socket.CMSG_SPACE(_STAMP.size) + socket.CMSG_SPACE(MAX_FDS * 4)
    data, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE + 1, room)
    sent, fds = None, []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _STAMP.size:
            seconds, nanoseconds = _STAMP.unpack_from(payload)
            sent = seconds + nanoseconds * 1e-9
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
    if fds or flags & socket.MSG_CTRUNC:  # descriptors where none are expected (more than fit are closed by
        for fd in fds:                    # the kernel): installed here, so closed here
            _close(fd)
        raise ProtocolError("a packet carried descriptors")
    if sent is None:
        sent = time.time()
    if not data:
        return None, sent
    return decode_message(data, truncated=bool(flags & socket.MSG_TRUNC)), sent


def decode_message(data: bytes, truncated: bool = False) -> dict:
    if truncated or len(data) > MAX_MESSAGE:
        raise ProtocolError(f"packet over the {MAX_MESSAGE}-byte limit")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"packet is not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"packet is a JSON {type(obj).__name__}, not an object")
    return obj


def encode_value(value, _depth: int = 0):
    """A JSON-able form of a call-based value (see the module docstring). Raises Unencodable."""
    if _depth > _MAX_DEPTH:
        raise Unencodable(f"value nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if value.bit_length() > _BIG_INT_BITS:
            return {INT_TAG: format(value, "x")}
        return int(value)  # an int subclass (IntEnum) becomes a plain int
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [encode_value(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        return {DICT_TAG: [[encode_value(k, _depth + 1), encode_value(v, _depth + 1)] for k, v in value.items()]}
    if type(value).__module__.split(".")[0] == "numpy" and hasattr(value, "tolist"):
        return encode_value(value.tolist(), _depth + 1)  # numpy scalar or array: compare by value
    raise Unencodable(f"return value of type {type(value).__name__} has no JSON form (lists, tuples, dicts, "
                      f"str, int, float, bool, None and numpy values do)")


def decode_value(wire, _depth: int = 0):
    """Inverse of encode_value. Raises ProtocolError for a form encode_value never produces."""
    if _depth > _MAX_DEPTH + 1:
        raise ProtocolError("value nested too deep")
    if wire is None or isinstance(wire, (bool, int, float, str)):
        return wire
    if isinstance(wire, list):
        return [decode_value(v, _depth + 1) for v in wire]
    if isinstance(wire, dict) and list(wire) == [INT_TAG] and isinstance(wire[INT_TAG], str):
        try:
            return int(wire[INT_TAG], 16)
        except ValueError:
            raise ProtocolError("malformed big int") from None
    if isinstance(wire, dict) and list(wire) == [DICT_TAG] and isinstance(wire[DICT_TAG], list):
        pairs = []
        for pair in wire[DICT_TAG]:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ProtocolError("malformed dict entry")
            pairs.append((decode_value(pair[0], _depth + 1), decode_value(pair[1], _depth + 1)))
        try:
            keys = [_hashable(k) for k, _ in pairs]
            hashes = len({hash(k) for k in keys})
        except TypeError:
            raise ProtocolError("unhashable dict key") from None
        # Keys that share a hash make each insertion scan the others: ints k * (2**61 - 1) all hash to 0, and
        # 32,000 of them, well within a result's size cap, took 5.8 s of the host's CPU to decode. No answer
        # needs many colliding keys, so a dict with more than a few is refused before it is built.
        if len(keys) - hashes > _COLLIDING_KEYS:  # (half colliding, half not, still cost 1.2 s at 24,000 keys)
            raise ProtocolError(f"dict of {len(keys)} keys with only {hashes} distinct hashes")
        return dict(zip(keys, (v for _, v in pairs)))
    raise ProtocolError(f"malformed value of JSON type {type(wire).__name__}")


def _hashable(key):
    # a tuple key travels as a list; lists are not hashable, so it comes back as a tuple
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
