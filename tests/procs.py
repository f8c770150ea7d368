"""Processes seen from /proc, for tests that kill or watch the loader's workers."""

from __future__ import annotations

import os


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def spawn_workers(pid: int) -> list[int]:
    """The children of ``pid`` that multiprocessing's spawn started (the loader's workers,
    not its resource tracker)."""
    workers = []
    for child in sorted(children(pid)):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if b"multiprocessing.spawn" in cmdline.read():
                    workers.append(child)
        except OSError:
            continue
    return workers


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid``, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
