"""Within-batch de-duplication keeps each event_id's first record in file order, whatever order
the validator hands the rows back in."""

from __future__ import annotations

import pyarrow as pa

from hub_pipelines.events.batches import _first_occurrences


def test_the_first_record_in_file_order_is_kept_of_each_event_id():
    rows = pa.table(
        {
            # Rows as validation returns them: grouped by how they were read, not by rec_idx.
            "rec_idx": pa.array([5, 1, 3, 0, 2, 4], pa.int64()),
            "event_id": ["b", "a", "b", "c", "a", None],
            "is_valid": [True, True, True, False, True, False],
        }
    )
    keep = _first_occurrences(rows).to_pylist()
    # b: rec 3 before rec 5; a: rec 1 before rec 2; c and the null id are invalid.
    assert keep == [False, True, True, False, False, False]


def test_no_valid_rows_keeps_nothing():
    rows = pa.table({"rec_idx": pa.array([0], pa.int64()), "event_id": ["a"], "is_valid": [False]})
    assert _first_occurrences(rows).to_pylist() == [False]
