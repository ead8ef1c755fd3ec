"""Reading what comes from outside edgeagent: files and JSON, with the limits every reader shares.

Every manifest, config, target, journal, data file and request body edgeagent reads goes through
here, so a hostile input becomes a typed error that says what is wrong instead of a hang (a FIFO),
a MemoryError (`/dev/zero`, a number with a million digits), a RecursionError (JSON nested
200,000 deep) or a traceback:

- `check_regular` / `open_regular`: a regular file, never a FIFO, socket, device or folder
  (opened non-blocking, so a FIFO cannot hang the open), optionally not a symlink and with a
  single link (a hardlink can be a file from outside the folder that holds it), size-capped.
- `loads_json` / `read_json`: JSON with caps on size, nesting depth and the length of numbers;
  NaN and Infinity refused unless asked for.

Every function takes `error`: a callable that turns the reason into the exception to raise (the
caller's own type, e.g. `ModelRejected` or `ArtifactError`); by default an `InputError` naming
what was read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable
from typing import IO, Any

from .errors import InputError

MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
# The longest number literal a JSON document may hold: 2**128 has 39 digits; every size, count
# and index edgeagent reads needs far fewer, and Python refuses ints over 4,300 digits anyway.
MAX_NUMBER_CHARS = 40

ErrorFactory = Callable[[str], Exception]


def _factory(path: object, what: str, error: ErrorFactory | None) -> ErrorFactory:
    if error is not None:
        return error
    return lambda reason: InputError(f"{what} {path}: {reason}", field=str(path))


def check_regular(path: str | os.PathLike, *, what: str = "file", follow_symlinks: bool = True,
                  single_link: bool = False, max_bytes: int | None = None,
                  error: ErrorFactory | None = None) -> os.stat_result:
    """The stat of `path` after checking it is a plain file, without opening it.

    For files another library opens by path (an SDK reading external data).

    Args:
        path: the file.
        what: what the file is, for messages (default "file").
        follow_symlinks: accept a symlink to a regular file (default True).
        single_link: refuse a file with more than one hard link (default False).
        max_bytes: refuse larger files (default None: no cap).
        error: reason → exception (default: an InputError naming `what` and `path`).

    Raises:
        what `error` builds: missing, a folder, not a regular file, a symlink, hardlinked, too large.
    """
    fail = _factory(path, what, error)
    try:
        st = os.stat(path) if follow_symlinks else os.lstat(path)
    except FileNotFoundError:
        raise fail("does not exist; check the path") from None
    except ValueError:  # an embedded NUL
        raise fail("the path holds a NUL character") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    _check_stat(st, fail, single_link=single_link, max_bytes=max_bytes)
    return st


def _check_stat(st: os.stat_result, fail: ErrorFactory, *, single_link: bool, max_bytes: int | None) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise fail("is a symlink; copy the file instead of linking it")
    if stat.S_ISDIR(st.st_mode):
        raise fail("is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise fail("is not a regular file (a FIFO, socket or device); give a plain file")
    if single_link and st.st_nlink > 1:
        raise fail(f"has {st.st_nlink} hard links; a hardlink may be a file from outside this folder, so it "
                   "is refused: copy the file instead of linking it")
    if max_bytes is not None and st.st_size > max_bytes:
        raise fail(f"is {st.st_size} bytes, over the cap of {max_bytes}")


def open_regular(path: str | os.PathLike, *, what: str = "file", follow_symlinks: bool = True,
                 single_link: bool = False, max_bytes: int | None = None,
                 error: ErrorFactory | None = None) -> IO[bytes]:
    """Open a plain file for binary reading; the checks run on the opened file, so they hold for
    what is read.

    Arguments and errors as `check_regular`.
    """
    fail = _factory(path, what, error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise fail("does not exist; check the path") from None
    except ValueError:
        raise fail("the path holds a NUL character") from None
    except IsADirectoryError:
        raise fail("is a folder, not a file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise fail("is a symlink; copy the file instead of linking it") from None
        raise fail(f"cannot be opened ({exc.strerror or exc})") from None
    try:
        _check_stat(os.fstat(fd), fail, single_link=single_link, max_bytes=max_bytes)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, *, max_bytes: int, what: str = "file", follow_symlinks: bool = True,
               single_link: bool = False, error: ErrorFactory | None = None) -> bytes:
    """The contents of a plain file of at most `max_bytes` (checked while reading, too, for a file
    that grows). Arguments and errors as `check_regular`."""
    fail = _factory(path, what, error)
    with open_regular(path, what=what, follow_symlinks=follow_symlinks, single_link=single_link,
                      max_bytes=max_bytes, error=error) as handle:
        try:
            # read(max_bytes + 1) would allocate the whole cap up front: read what fstat says is
            # there, then in chunks only if the file grew meanwhile.
            data = handle.read(min(os.fstat(handle.fileno()).st_size, max_bytes) + 1)
            while len(data) <= max_bytes and (chunk := handle.read(min(1 << 24, max_bytes + 1 - len(data)))):
                data += chunk
        except OSError as exc:
            raise fail(f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise fail(f"is over the cap of {max_bytes} bytes")
    return data


def read_text(path: str | os.PathLike, *, max_bytes: int, what: str = "file", follow_symlinks: bool = True,
              error: ErrorFactory | None = None) -> str:
    """A plain UTF-8 text file of at most `max_bytes`. Raises as `check_regular`, and for text
    that is not UTF-8."""
    data = read_bytes(path, max_bytes=max_bytes, what=what, follow_symlinks=follow_symlinks, error=error)
    return decode_utf8(data, _factory(path, what, error))


def decode_utf8(data: bytes, fail: ErrorFactory) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


class _Refused(Exception):
    pass


def loads_json(data: str | bytes, *, what: str = "JSON document", max_depth: int = MAX_JSON_DEPTH,
               allow_nan: bool = False, error: ErrorFactory | None = None) -> Any:
    """Parse JSON with caps: nesting depth, number length, finite numbers.

    Args:
        data: the document (bytes are decoded as UTF-8).
        what: what the document is, for messages.
        max_depth: deepest nesting of arrays and objects accepted (default 64).
        allow_nan: accept NaN and ±Infinity (default False; results files written by Python hold them).
        error: reason → exception (default: an InputError naming `what`).

    Raises:
        what `error` builds: not UTF-8, not JSON, nested too deep, a number too long or not finite.
    """
    fail = error or (lambda reason: InputError(f"{what}: {reason}"))

    def number_text(text: str) -> None:
        if len(text) > MAX_NUMBER_CHARS:
            raise _Refused(f"holds a number of {len(text)} characters; numbers may have at most "
                           f"{MAX_NUMBER_CHARS}")

    def parse_int(text: str) -> int:
        number_text(text)
        return int(text)

    def parse_float(text: str) -> float:
        number_text(text)
        value = float(text)
        if not math.isfinite(value) and not allow_nan:
            raise _Refused(f"holds the number {text}, which is out of range")
        return value

    def parse_constant(name: str) -> float:
        if not allow_nan:
            raise _Refused(f"holds {name}, which is not a JSON number")
        return float(name)

    if isinstance(data, (bytes, bytearray)):
        data = decode_utf8(bytes(data), fail)
    try:
        value = json.loads(data, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except _Refused as exc:
        raise fail(str(exc)) from None
    except RecursionError:
        raise fail(f"nests arrays or objects deeper than the cap of {max_depth}") from None
    except json.JSONDecodeError as exc:
        raise fail(f"does not parse as JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # anything else the decoder refuses
        raise fail(f"does not parse as JSON ({exc})") from None
    depth = _depth(value, max_depth)
    if depth > max_depth:
        raise fail(f"nests arrays or objects deeper than the cap of {max_depth}")
    return value


def _depth(value: Any, cap: int) -> int:
    """Nesting depth, iteratively (no recursion to exhaust), stopping once past `cap`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > cap:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def read_json(path: str | os.PathLike, *, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH, allow_nan: bool = False, follow_symlinks: bool = True,
              error: ErrorFactory | None = None) -> Any:
    """A JSON file read through `read_bytes` and `loads_json` (the same caps and errors)."""
    fail = _factory(path, what, error)
    data = read_bytes(path, max_bytes=max_bytes, what=what, follow_symlinks=follow_symlinks, error=error)
    return loads_json(data, what=what, max_depth=max_depth, allow_nan=allow_nan, error=fail)


def first_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text`, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None

