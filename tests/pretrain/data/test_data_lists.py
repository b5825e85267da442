"""JSONL/CSV image-text lists: reading, path resolution, malformed files, counted skips of bad rows."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pipeline_fixtures import png_bytes

from pretrain.data.lists import load_item, read_list
from pretrain.data.synthetic import write_list
from pretrain.runtime.errors import DataError


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_reads_written_lists(tmp_path, fmt):
    path = write_list(tmp_path, 4, fmt=fmt, image_size=16)
    items = read_list(path)
    assert len(items) == 4 and items.images[2] == str(tmp_path / "images" / "000000002.png")
    counts: Counter = Counter()
    image, caption = load_item(items, 2, counts)
    assert image.size == (16, 16) and caption == items.captions[2].strip() and not counts


def test_custom_columns_image_root_tsv_and_absolute_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes())
    absolute = tmp_path / "abs.png"
    absolute.write_bytes(png_bytes())
    listing = tmp_path / "lists" / "set.tsv"
    listing.parent.mkdir()
    listing.write_text(f"file\ttext\tother\na.png\tfirst\tx\n{absolute}\tsecond\ty\n")
    items = read_list(listing, image_key="file", caption_key="text", image_root=str(tmp_path / "imgs"))
    assert items.images == [str(tmp_path / "imgs" / "a.png"), str(absolute)]
    assert items.captions == ["first", "second"]


def test_malformed_lists_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"image": "a.png", "caption": "ok"}\n\n{"image": "b.png", "caption": "ok"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not a JSON object line"):
        read_list(path)
    path.write_text('{"image": "a.png", "caption": "ok"}\n{"image": "b.png", "text": "no caption"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing field 'caption'"):
        read_list(path)
    path.write_text('{"image": "a.png", "caption": 3}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'caption' must be a string"):
        read_list(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: expected an object"):
        read_list(path)
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("image,text\na.png,hello\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: missing column 'caption'"):
        read_list(csv_path)
    csv_path.write_text("image,caption\na.png,hello\nb.png,hi,extra\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: 3 cells"):
        read_list(csv_path)
    (tmp_path / "x.parquet").touch()
    for bad, pattern in ((tmp_path / "none.jsonl", "does not exist"), (tmp_path / "x.parquet", "unknown format")):
        with pytest.raises(DataError, match=pattern):
            read_list(bad)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        read_list(tmp_path / "empty.jsonl")


def test_bad_rows_are_counted_skips(tmp_path):
    (tmp_path / "good.png").write_bytes(png_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    rows = [("good.png", "fine"), ("missing.png", "gone"), ("broken.png", "broken"), ("good.png", "   ")]
    path = tmp_path / "l.jsonl"
    path.write_text("".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in rows))
    items = read_list(path)
    counts: Counter = Counter()
    results = [load_item(items, i, counts) for i in range(4)]
    assert results[0][1] == "fine" and results[1:] == [None, None, None]
    assert dict(counts) == {"missing_image": 1, "bad_image": 1, "empty_caption": 1}
