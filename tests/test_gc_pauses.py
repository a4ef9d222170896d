"""Garbage-collector pauses: timed per collection, and what start-up leaves is frozen."""

from __future__ import annotations

import gc

from voip_sos.gc_pauses import GcWatch, settle


def test_watch_times_each_collection_and_reports_its_generation() -> None:
    seen: list[tuple[int, float]] = []
    watch = GcWatch(lambda gen, s: seen.append((gen, s))).install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        watch.uninstall()
    gc.collect()  # after uninstall: not counted
    assert [g for g, _ in seen] == [0, 2]
    assert all(0 <= s < 5 for _, s in seen)
    assert watch.count == 2 and watch.longest_s == max(s for _, s in seen)
    assert watch.take() == seen and watch.take() == []


def test_settle_moves_what_is_alive_out_of_reach_of_later_collections() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    keep = [Node() for _ in range(1000)]
    try:
        settle()
        assert gc.get_freeze_count() >= len(keep)
        assert not any(gc.is_tracked(n) and n in gc.get_objects(generation=2) for n in keep[:5])
    finally:
        gc.unfreeze()
