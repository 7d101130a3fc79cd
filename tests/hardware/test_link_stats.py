"""Sequence tracking: gaps are drops, repeats are duplicates, going back is late; wraps work."""

from __future__ import annotations

from pearl_robot.hardware.link_stats import LinkCounters, RttEstimator, SeqTracker, SeqVerdict


def _run(seqs: list[int]) -> tuple[list[SeqVerdict], LinkCounters]:
    tr, c, out = SeqTracker(), LinkCounters(), []
    for s in seqs:
        r = tr.observe(s)
        c.count_seq(r)
        out.append(r.verdict)
    return out, c


def test_in_order_gap_duplicate_and_late() -> None:
    verdicts, c = _run([10, 11, 11, 14, 12, 15])
    assert verdicts == [SeqVerdict.FIRST, SeqVerdict.IN_ORDER, SeqVerdict.DUPLICATE,
                        SeqVerdict.GAP, SeqVerdict.LATE, SeqVerdict.IN_ORDER]
    assert (c.dropped, c.duplicates, c.late) == (2, 1, 1)


def test_wraparound_is_in_order_not_late() -> None:
    verdicts, c = _run([65534, 65535, 0, 1, 3])
    assert verdicts[1:4] == [SeqVerdict.IN_ORDER] * 3
    assert c.dropped == 1 and c.late == 0


def test_reset_starts_a_new_numbering() -> None:
    tr = SeqTracker()
    tr.observe(500)
    tr.reset(0)
    assert tr.observe(1).verdict is SeqVerdict.IN_ORDER


def test_rtt_matches_acks_and_ignores_unknown() -> None:
    rtt = RttEstimator(window=2)
    rtt.sent(1, 10.0)
    rtt.sent(2, 10.5)
    rtt.sent(3, 10.6)  # evicts seq 1
    assert rtt.acked(1, 11.0) is None
    assert rtt.acked(2, 10.75) == 0.25
    assert rtt.count == 1 and rtt.max_s == 0.25
