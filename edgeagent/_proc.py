"""Read one `Key: value kB` field of a /proc file; no imports beyond the standard library, so the
bench worker can measure its own memory before anything heavy is loaded."""

from __future__ import annotations

from pathlib import Path


def proc_field_bytes(path: str, key: str) -> int | None:
    """`key`'s value in bytes from /proc/meminfo, /proc/<pid>/status and the like; None if absent."""
    prefix = key + ":"
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
