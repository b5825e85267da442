"""JSON files with one-line errors; JSONL files that survive a torn last line."""

import pytest

from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_json_file, read_jsonl, repair_tail


def test_read_json_file_errors_name_the_file_in_one_line(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json_file(good) == {"a": [1, 2]}
    with pytest.raises(UserError, match=r"missing\.json: no such file; expected a manifest$"):
        read_json_file(tmp_path / "missing.json", expected="a manifest")
    with pytest.raises(DataError, match="^custom message$"):
        read_json_file(tmp_path / "missing.json", "custom message", DataError)
    for name, data in (("bad.json", b'{"a": '), ("latin.json", b'{"a": "\xff"}')):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as err:
            read_json_file(tmp_path / name, error=DataError)
        assert str(err.value).startswith(f"{tmp_path / name}: not valid JSON (") and "\n" not in str(err.value)


def test_torn_tail_is_cut_and_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n[2]\n\n{"id": 3}\n{"id": 4, "ans')
    assert read_jsonl(path) == ([{"id": 1}, {"id": 3}], 2)  # a non-object line and the torn one
    assert repair_tail(path) == len('{"id": 4, "ans')
    assert path.read_text().endswith('{"id": 3}\n') and repair_tail(path) == 0
    assert read_jsonl(tmp_path / "absent.jsonl") == ([], 0)
