"""The sanity check's units of work: the run's first positions, in parts that do not depend on the workers."""

from attn_audit.tasks.evaluate.chunks import SANITY_PART, SANITY_UNIT, Chunk, sanity_units


def spans(units):
    assert all(u.shard_id == SANITY_UNIT for u in units)
    return [(u.start, u.stop) for u in units]


def test_the_first_positions_in_parts():
    chunks = [Chunk(0, 0, 20), Chunk(1, 20, 40)]
    assert SANITY_PART == 16
    assert spans(sanity_units(chunks, 32)) == [(0, 16), (16, 32)]
    assert spans(sanity_units(chunks, 40)) == [(0, 16), (16, 32), (32, 40)]
    assert spans(sanity_units(chunks, 3)) == [(0, 3)]


def test_only_the_leading_contiguous_chunks_of_a_run_with_gaps():
    assert spans(sanity_units([Chunk(0, 0, 10), Chunk(2, 20, 30)], 32)) == [(0, 10)]
    assert spans(sanity_units([Chunk(1, 10, 20), Chunk(2, 20, 30)], 32)) == [(10, 26), (26, 30)]
