"""What other processes cost: CPU time from ``/proc/<pid>/stat`` and database round trips from ``ss``.

The deployment-shaped benchmark measures processes it does not run in: ``mana-ai serve`` (and any worker
processes it starts) and the PostgreSQL server (the postmaster and its backends). Both are read before and
after the timed window; the difference is what the window cost.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root``, its live descendants and the children it has reaped.

    A reaped child's time moves into its parent's cutime/cstime, so backends and workers that exit inside
    the window are still counted (PostgreSQL's postmaster reaps its backends).
    """
    total = 0
    stack = [root]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # utime, stime, cutime, cstime are fields 14-17 (1-based) = 11-14 after the command name.
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        stack.extend(_children(pid))
    return total / _TICKS


def postmaster_pid(pgdata: str) -> int:
    with open(os.path.join(pgdata, "postmaster.pid"), encoding="ascii") as fh:
        return int(fh.readline().strip())


_SEGS = re.compile(r"\bdata_segs_out:(\d+)")
_SEGS_IN = re.compile(r"\bdata_segs_in:(\d+)")
_PID = re.compile(r"pid=(\d+)")


@dataclass(frozen=True)
class Segments:
    sent: int
    received: int


def client_segments(pids: set[int], server_port: int) -> dict[str, Segments]:
    """Per TCP connection to ``server_port`` owned by one of ``pids``: data segments sent and received.

    With TCP_NODELAY (libpq sets it) every message batch the client flushes leaves as one data segment on
    loopback, so the segments a client sent to the database are its round trips to it (a pipeline flushes
    several statements as one).
    """
    proc = subprocess.run(
        ["ss", "-tinpH", "state", "established", "dport", "= :" + str(server_port)],
        capture_output=True,
        text=True,
        check=False,
    )
    found: dict[str, Segments] = {}
    lines = proc.stdout.splitlines()
    for head, info in zip(lines[0::2], lines[1::2], strict=False):
        owners = {int(p) for p in _PID.findall(head)}
        if not owners & pids:
            continue
        key = " ".join(head.split()[2:4])
        sent, received = _SEGS.search(info), _SEGS_IN.search(info)
        found[key] = Segments(int(sent.group(1)) if sent else 0, int(received.group(1)) if received else 0)
    return found


def segments_between(before: dict[str, Segments], after: dict[str, Segments]) -> Segments:
    """Segments sent and received in the window (connections opened inside it count from zero)."""
    sent = received = 0
    for key, seg in after.items():
        old = before.get(key, Segments(0, 0))
        sent += seg.sent - old.sent
        received += seg.received - old.received
    return Segments(sent, received)


def process_tree(root: int) -> set[int]:
    pids = {root}
    stack = [root]
    while stack:
        for child in _children(stack.pop()):
            if child not in pids:
                pids.add(child)
                stack.append(child)
    return pids
