"""The consumer loop's collector setting: on while any loop runs, and the process left as it was."""

from __future__ import annotations

import gc

from paperwire import stream


def test_overlapping_loops_leave_the_collector_as_they_found_it() -> None:
    before = gc.get_threshold()
    less = (stream.YOUNG_GC_THRESHOLD, 20, 20)
    assert before != less
    first, second = stream.fewer_collections(), stream.fewer_collections()
    first.__enter__()
    assert gc.get_threshold() == less
    second.__enter__()
    first.__exit__(None, None, None)  # the first loop to start ends first (threads in the demo and tests)
    assert gc.get_threshold() == less  # the second still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
