"""engine.host_profile: the host clock's accounting (on a fake clock, so exact) and the gap profile's arithmetic;
the engine's own profile is checked on a GPU in tests/test_engine_cuda.py (CUDA events only exist there)."""
import pytest

from prompt_tree.engine.host_profile import LATE_GAP_S, PARTS, HostClock, gap_profile


def test_clock_charges_each_interval_to_the_part_it_was_in():
    fake_time = [100.0]
    clock = HostClock(now=lambda: fake_time[0])
    fake_time[0] += 1.0                        # other
    left = clock.switch("read")
    fake_time[0] += 2.0                        # read
    inner = clock.switch("finish")
    fake_time[0] += 4.0                        # a finish inside the read counts once, as a finish
    clock.switch(inner)
    fake_time[0] += 8.0                        # read again
    clock.switch(left)
    fake_time[0] += 16.0                       # other
    clock.switch("launch")
    fake_time[0] += 32.0
    parts = clock.lap()
    assert left == "other" and inner == "read"
    assert parts == {"read": 10.0, "finish": 4.0, "admit": 0.0, "pages": 0.0, "launch": 32.0, "wait": 0.0,
                     "other": 17.0}
    assert sum(parts.values()) == 63.0         # every second since the clock started, once
    fake_time[0] += 5.0                        # the lap starts over, in the part it was in
    assert clock.lap() == dict.fromkeys(PARTS, 0.0) | {"launch": 5.0}


def test_gap_profile_quantiles_and_late_parts():
    def parts(read):
        return dict.fromkeys(PARTS, 0.0) | {"read": read, "finish": 1.0}

    # (idle, host parts, device work between the two steps): the work is given apart, never as idle or lateness
    records = [(0.0, parts(0.1), 0.0), (1e-5, parts(0.2), 3e-4), (0.002, parts(0.3), 0.0), (0.010, parts(0.4), 0.0),
               (1e-4, None, 5e-4)]
    p = gap_profile(records)
    assert p["steps"] == 5 and p["late_steps"] == 2 and p["late_idle_s"] == pytest.approx(0.012)
    assert p["between_s"] == pytest.approx(8e-4)
    assert p["max_ms"] == pytest.approx(10.0) and p["p50_ms"] == pytest.approx(0.1)
    assert p["host_s"]["read"] == pytest.approx(1.0) and p["host_s"]["finish"] == 4.0
    assert p["late_host_s"]["read"] == pytest.approx(0.7) and p["late_host_s"]["finish"] == 2.0
    assert LATE_GAP_S < 0.002
    assert gap_profile([])["steps"] == 0 and gap_profile([])["max_ms"] == 0.0
