import unicodedata

import numpy as np
import pandas as pd
import pytest

from tagcons.data import PairColumns, load_pairs, normalise_text
from tagcons.data.pairs import report_duplicates
from tagcons.errors import BadInputError


def test_reads_study_columns_and_normalises(write_csv):
    table = load_pairs(write_csv([["a.png", " #바다 ", 5], ["b.png", "sky", "3"]]))
    assert list(table.texts) == ["#바다", "sky"]
    assert list(table.labels) == [5, 3]
    assert list(table.frame["line"]) == [2, 3]


def test_byte_order_mark_is_not_part_of_the_first_column(write_csv):
    table = load_pairs(write_csv([["a.png", "x", 1]], encoding="utf-8-sig"))
    assert list(table.images) == ["a.png"]


def test_nfd_and_nfc_hashtags_become_one_key(write_csv):
    nfc = "바다"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    table = load_pairs(write_csv([["a.png", nfc, 5], ["b.png", nfd, 4]]))
    assert table.unique_texts() == [nfc]


def test_strip_hash_only_when_asked(write_csv):
    path = write_csv([["a.png", "#일상", 2]])
    assert load_pairs(path).unique_texts() == ["#일상"]
    assert load_pairs(path, strip_hash=True).unique_texts() == ["일상"]
    assert normalise_text("  #ootd ", strip_hash=True) == "ootd"


def test_tsv_and_parquet_and_custom_columns(tmp_path, write_csv):
    tsv = write_csv([["a.png", "x", 1]], name="p.tsv", sep="\t")
    assert len(load_pairs(tsv)) == 1
    frame = pd.DataFrame({"img": ["a.png", "b.png"], "tag": ["x", "y"], "y": [1, 5]})
    frame.to_parquet(tmp_path / "p.parquet")
    table = load_pairs(tmp_path / "p.parquet", PairColumns("img", "tag", "y"))
    assert list(table.labels) == [1, 5]


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([["a.png", "x", 6]], r"outside 1-5 at lines 2"),
        ([["a.png", "x", 0], ["b.png", "y", 2], ["c.png", "z", 9]], r"outside 1-5 at lines 2, 4"),
        ([["a.png", "x", 2.5]], r"not an integer at lines 2"),
        ([["a.png", "x", "high"]], r"not an integer"),
        ([["a.png", "x", ""]], r"empty label .* lines 2"),
        ([["a.png", "", 3]], r"empty cell in column 'Hashtag' at lines 2"),
        ([["", "x", 3]], r"empty cell in column 'Image Filename'"),
        ([["a.png", "nan", 3], ["a.png", "NA", 3]], None),  # 'nan' and 'NA' are real hashtags, not missing
    ],
)
def test_bad_cells_name_file_and_line(write_csv, rows, expected):
    path = write_csv(rows)
    if expected is None:
        assert list(load_pairs(path).texts) == ["nan", "NA"]
        return
    with pytest.raises(BadInputError, match=expected) as info:
        load_pairs(path)
    assert str(path) in str(info.value)


def test_missing_file_column_and_empty_table(tmp_path, write_csv):
    with pytest.raises(BadInputError, match="not found"):
        load_pairs(tmp_path / "nope.csv")
    with pytest.raises(BadInputError, match=r"missing column 'Score' \(--label-col\)"):
        load_pairs(write_csv([["a.png", "x"]], header=("Image Filename", "Hashtag")))
    with pytest.raises(BadInputError, match="no rows"):
        load_pairs(write_csv([]))


def test_labels_optional_for_scoring(write_csv):
    table = load_pairs(write_csv([["a.png", "x"]], header=("Image Filename", "Hashtag")), require_labels=False)
    assert not table.has_labels and list(table.labels) == [-1]


def test_hashtags_differing_only_by_invisible_characters_are_counted_and_kept_distinct(write_csv, caplog):
    rows = [["a.png", "#cat", 5], ["b.png", "#cat\u200b", 4], ["c.png", "#\u202ecat", 3]]
    rows += [["d.png", "#dog", 2], ["e.png", "#do\u2066g", 1], ["f.png", "#bird\u200d", 1], ["g.png", "#fish", 2]]
    with caplog.at_level("WARNING", logger="tagcons"):
        table = load_pairs(write_csv(rows))
    assert len(table.unique_texts()) == 7  # kept as the distinct keys they are
    warned = [r.getMessage() for r in caplog.records if "invisible characters" in r.getMessage()]
    assert len(warned) == 1
    assert "5 hashtags differ from another only by invisible characters" in warned[0]
    assert "e.g. '#cat' and '#cat<U+200B>'" in warned[0]
    assert {"ZERO WIDTH SPACE", "RIGHT-TO-LEFT OVERRIDE", "LEFT-TO-RIGHT ISOLATE"} <= set(
        warned[0].split(" (")[1].split(")")[0].split(", ")
    )


def test_a_hashtag_with_an_invisible_character_but_no_visible_twin_is_not_warned_about(write_csv, caplog):
    with caplog.at_level("WARNING", logger="tagcons"):
        load_pairs(write_csv([["a.png", "#👨\u200d👩", 5], ["b.png", "#cat", 4]]))
    assert "invisible" not in caplog.text


def test_invisible_variants_group_keys_equal_without_their_invisible_characters():
    from tagcons.invisible import invisible_variants, shown, without_invisible

    keys = ["#a", "#b\u200f", "#a\u200b", "#\ufeffa", "#b\u200e", "#c"]
    assert invisible_variants(keys) == [("#a", "#a\u200b", "#\ufeffa"), ("#b\u200f", "#b\u200e")]
    assert without_invisible("#\u2067x\u2069\u00ad") == "#x" and shown("#a\u200b") == "#a<U+200B>"


def test_duplicates_counted_and_conflicts_warned(write_csv, caplog):
    path = write_csv([["a.png", "x", 5], ["a.png", "x", 5], ["a.png", "y", 1], ["a.png", "y", 2]])
    with caplog.at_level("INFO", logger="tagcons"):
        load_pairs(path)
    assert "1 duplicate pair rows" in caplog.text
    assert "1 pairs appear with different scores" in caplog.text


def test_reference_table(reference_csv):
    table = load_pairs(reference_csv)
    assert len(table) == 2022
    assert len(table.unique_images()) == 172
    assert sorted(pd.Series(table.labels).value_counts().to_dict().items()) == [
        (1, 78),
        (2, 205),
        (3, 315),
        (4, 551),
        (5, 873),
    ]


def test_large_parquet_table_counts_duplicates_and_conflicts(tmp_path):
    rng = np.random.default_rng(0)
    n = 60_000
    frame = pd.DataFrame(
        {
            "Image Filename": [f"img_{i:05d}.jpg" for i in rng.integers(0, 3000, n)],
            "Hashtag": [f"#태그{i}" for i in rng.integers(0, 800, n)],
            "Score": rng.integers(1, 6, n),
        }
    )
    frame.to_parquet(tmp_path / "big.parquet")
    table = load_pairs(tmp_path / "big.parquet")
    expected_duplicates = int(frame.duplicated().sum())
    expected_conflicts = int((frame.groupby(["Image Filename", "Hashtag"])["Score"].nunique() > 1).sum())
    assert report_duplicates(table) == (expected_duplicates, expected_conflicts)
    assert len(table.unique_images()) == frame["Image Filename"].nunique()


def test_nfd_and_nfc_image_keys_become_one_key(write_csv):
    nfc = "바다.png"
    nfd = unicodedata.normalize("NFD", nfc)  # what macOS writes for the same file name
    assert nfd != nfc
    table = load_pairs(write_csv([[nfc, "x", 5], [nfd, "y", 4], [f" {nfd} ", "z", 3]]))
    assert table.unique_images() == [nfc] and list(table.images) == [nfc, nfc, nfc]


@pytest.mark.parametrize(
    "content, reason",
    [
        ("Image Filename,Hashtag,Score\na.png,#바다,5\n".encode("cp949"), "invalid UTF8 data"),
        (b"Image Filename,Hashtag,Score\na.png,x,5\nb.png,y,4,extra\n", "Expected 3 columns, got 4"),
    ],
    ids=["cp949", "ragged"],
)
def test_unreadable_csv_is_bad_input_naming_file_and_fix(tmp_path, content, reason):
    path = tmp_path / "pairs.csv"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=reason) as info:
        load_pairs(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "save it as UTF-8 CSV" in message and "\n" not in message
