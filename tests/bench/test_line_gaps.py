"""bench/line_gaps.py: every line stamped, the longest silence between lines reported."""

import importlib.util
import io
import time
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("line_gaps", Path(__file__).resolve().parents[2] / "bench/line_gaps.py")
line_gaps = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(line_gaps)


class SlowLines(io.StringIO):
    """Three lines, the third arriving 0.3 s after the second."""

    def __iter__(self):
        yield "a\n"
        yield "b\n"
        time.sleep(0.3)
        yield "c\n"


def test_lines_are_stamped_and_the_longest_gap_is_reported():
    out = io.StringIO()
    total, longest = line_gaps.stamp(SlowLines(), out)
    lines = out.getvalue().splitlines()
    assert [line.split()[-1] for line in lines[:3]] == ["a", "b", "c"] and 0.3 <= longest <= total < 5
    assert lines[-1] == f"total {total:.1f} s, longest gap {longest:.1f} s"
