"""Posts in, verdicts out: hashtag extraction, `score` (streamed, ranked, misfits) and bad posts files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from test_heads_support import planted, write_cache, write_pairs

from tagcons.configs import FitHeadConfig, PostColumns, ScoreConfig
from tagcons.data.post_tags import clean_tags, extract_hashtags, parse_tag_list
from tagcons.errors import BadInputError
from tagcons.posts.score import score_posts


def test_hashtags_end_at_emoji_punctuation_and_the_next_hash_and_keep_every_script():
    caption = "Sunset #바다 #beach_day! #sun🌅 #नमस्ते, #ภาษาไทย #a#b #café #2024 # alone"
    tags = ["바다", "beach_day", "sun", "नमस्ते", "ภาษาไทย", "a", "b", "café", "2024"]
    assert extract_hashtags(caption) == [f"#{tag}" for tag in tags]  # with their '#', as a pairs file writes them
    assert extract_hashtags(None) == [] and extract_hashtags("") == [] and extract_hashtags(float("nan")) == []


def test_a_tag_list_is_a_list_a_json_list_or_tags_split_on_spaces_and_commas():
    assert parse_tag_list(["#a", "b"]) == ["#a", "b"]
    assert parse_tag_list('["#바다", "sea"]') == ["#바다", "sea"]
    assert parse_tag_list("#a, b  c,d") == ["#a", "b", "c", "d"]
    for bad in ('{"a": 1}', "[1, 2]", '["a", ["b"]]', "[not json"):
        with pytest.raises(ValueError):
            parse_tag_list(bad)


def test_tags_are_normalised_deduplicated_and_invisible_characters_counted():
    raw = [["#cafe\u0301", "café", " sea ", "", "#", "sea\u200b", "sea"], [], ["sea", "#sea"]]
    assert list(clean_tags(raw).tags) == ["#café", "café", "sea", "sea\u200b", "sea", "#sea"]  # as pairs keep them
    clean = clean_tags(raw, strip_hash=True)  # keyed as a cache embedded with --strip-hash
    assert list(clean.tags) == ["café", "sea", "sea\u200b", "sea"] and list(clean.owner) == [0, 0, 0, 2]
    assert list(clean.position) == [0, 1, 2, 0] and list(clean.n_tags) == [3, 0, 1]
    assert list(clean.n_duplicates) == [2, 0, 1] and list(clean.n_invisible) == [1, 0, 0]


def _planted_without_hash(n_images=24):
    data = planted(n_images=n_images, per_image=8, dim=8, seed=3)
    data.texts = np.array([t.lstrip("#") for t in data.texts])
    data.text_embeds = {k.lstrip("#"): v for k, v in data.text_embeds.items()}
    return data


@pytest.fixture(scope="module")
def scored_world(tmp_path_factory):
    from tagcons.heads import fit_head

    root = tmp_path_factory.mktemp("posts")
    data = _planted_without_hash()
    pairs = write_pairs(data, root / "pairs.csv")
    cache = write_cache(
        data,
        root / "cache.h5",
        skip_images=("cat_023.png",),
        failed_images=("cat_022.png",),
        settings={"strip_hash": True},
    )  # its hashtags keyed without '#', as --strip-hash writes them: so are the posts' tags
    config = FitHeadConfig(data=pairs, cache=cache, head="logreg", out=root / "run", head_params={"Cs": (1.0,)})
    run = fit_head(config).run_dir
    frame = pd.DataFrame({"image": data.images, "tag": data.texts})
    posts = frame.groupby("image", sort=True)["tag"].apply(list).reset_index()
    posts.insert(0, "post_id", [f"p{i:03d}" for i in range(len(posts))])
    posts["hashtags"] = posts.pop("tag").map(json.dumps)
    posts["city"] = "Seoul"
    posts.to_csv(root / "posts.csv", index=False)
    return {"root": root, "cache": cache, "run": run, "posts": root / "posts.csv", "data": data}


def _score(world, name, **kw):
    config = ScoreConfig(cache=world["cache"], posts=world["posts"], out=world["root"] / f"{name}.parquet", **kw)
    return score_posts(config)


def test_scores_rank_within_each_post_by_expected_score_and_flag_misfits_by_the_documented_rule(scored_world):
    summary = _score(scored_world, "ranked", run=scored_world["run"])
    pairs = pd.read_parquet(summary.out)
    assert {"post_id", "image", "city", "hashtag", "position", "pred", "expected", "p1", "p5", "rank", "misfit"} <= set(
        pairs.columns
    )
    ok = pairs[pairs["status"] == "ok"]
    for _, post in ok.groupby("post_id"):
        ordered = post.sort_values("rank")
        assert list(ordered["rank"]) == list(range(1, len(post) + 1))
        assert np.all(np.diff(ordered["expected"].to_numpy()) <= 1e-12)
    np.testing.assert_allclose(ok["expected"], ok[[f"p{k}" for k in range(1, 6)]].to_numpy() @ np.arange(1, 6))
    p_at_most_2 = ok["p1"] + ok["p2"]
    assert (ok["misfit"].astype(bool) == (p_at_most_2 >= 0.5)).all()
    assert summary.n_misfits == int(ok["misfit"].sum())


def test_pairs_that_cannot_be_scored_are_kept_with_their_reason_and_counted(scored_world):
    summary = _score(scored_world, "missing", run=scored_world["run"])
    pairs, posts = pd.read_parquet(summary.out), pd.read_parquet(summary.posts_out)
    assert len(pairs) == len(scored_world["data"].images)  # nothing lost
    by_image = pairs.groupby("image")["status"].first()
    assert by_image["cat_023.png"] == "image not in cache"
    assert by_image["cat_022.png"] == "image failed: cannot identify image"
    assert pairs.loc[pairs["status"] != "ok", "expected"].isna().all()
    assert summary.posts_without_image == 2 and summary.unscored == {
        "image not in cache": 8,
        "image failed: cannot identify image": 8,
    }
    assert set(posts.columns) >= {"post_id", "hashtags", "city", "n_tags", "n_scored", "n_misfits", "mean_expected"}


def test_streaming_in_small_chunks_writes_the_same_bytes_as_one_chunk(scored_world):
    one = _score(scored_world, "one", run=scored_world["run"], chunk_posts=1000)
    small = _score(scored_world, "small", run=scored_world["run"], chunk_posts=5)
    assert one.out.read_bytes() == small.out.read_bytes()
    assert one.posts_out.read_bytes() == small.posts_out.read_bytes()


def test_without_a_run_the_scores_are_cosine_and_clipscore(scored_world):
    from tagcons.cache.rows import l2_normalise

    pairs = pd.read_parquet(_score(scored_world, "zero_shot").out)
    data = scored_world["data"]
    row = pairs[pairs["status"] == "ok"].iloc[3]
    img = l2_normalise(data.image_embeds[row["image"]][None].astype(np.float32))[0]
    txt = l2_normalise(data.text_embeds[row["hashtag"]][None].astype(np.float32))[0]
    assert row["cosine"] == pytest.approx(float(img @ txt), abs=1e-6)
    assert row["clipscore"] == pytest.approx(100 * max(float(img @ txt), 0.0), abs=1e-4)
    assert "pred" not in pairs.columns


def test_an_existing_output_is_refused_unless_overwriting(scored_world):
    _score(scored_world, "twice")
    with pytest.raises(
        BadInputError, match=r"twice\.parquet: already exists; pass --overwrite to replace it, or choose another --out$"
    ):
        _score(scored_world, "twice")
    _score(scored_world, "twice", overwrite=True)


def _posts_file(tmp_path, frame, name="posts.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_bad_posts_files_get_one_line_naming_the_file_row_and_fix(scored_world, tmp_path):
    no_image = _posts_file(tmp_path, pd.DataFrame({"post_id": ["a"], "caption": ["#x"]}), "no_image.csv")
    not_list = _posts_file(
        tmp_path, pd.DataFrame({"post_id": ["a", "b"], "image": ["x", "y"], "hashtags": ["[]", "[1]"]})
    )
    for path, message in (
        (no_image, r"no_image\.csv: no column 'image' \(columns: post_id, caption\); name it with --image-col$"),
        (not_list, r"posts\.csv: row 2: column 'hashtags' is not a tag list \(a tag must be a string, got 1\)"),
    ):
        with pytest.raises(BadInputError, match=message):
            score_posts(ScoreConfig(cache=scored_world["cache"], posts=path, out=tmp_path / "o.parquet"))


def test_posts_without_tags_and_empty_captions_are_kept_and_counted(scored_world, tmp_path, caplog):
    frame = pd.DataFrame(
        {
            "post_id": ["a", "b", "c"],
            "image": ["cat_000.png"] * 3,
            "caption": ["", "no tags here", "#tag_000_1 #tag_000_1"],
        }
    )
    path = _posts_file(tmp_path, frame)
    with caplog.at_level(logging.WARNING, logger="tagcons.data.posts"):
        summary = score_posts(ScoreConfig(cache=scored_world["cache"], posts=path, out=tmp_path / "o.parquet"))
    posts = pd.read_parquet(summary.posts_out)
    assert list(posts["n_tags"]) == [0, 0, 1] and len(pd.read_parquet(summary.out)) == 1
    assert "2 posts have no hashtags (kept in the posts table with n_tags 0) (first: row 1)" in caplog.text
    assert "1 repeated hashtags within a post were dropped (the first kept) (first: row 3)" in caplog.text


def test_columns_are_named_by_options(scored_world, tmp_path):
    frame = pd.DataFrame({"id": ["a"], "file": ["cat_000.png"], "text": ["#tag_000_1 #tag_000_2"]})
    path = _posts_file(tmp_path, frame)
    columns = PostColumns(post_id="id", image="file", caption="text")
    summary = score_posts(
        ScoreConfig(cache=scored_world["cache"], posts=path, out=tmp_path / "o.parquet", columns=columns)
    )
    assert list(pd.read_parquet(summary.out)["hashtag"]) == ["tag_000_1", "tag_000_2"]


def _suggest(world, name, **kw):
    from tagcons.configs import SuggestConfig
    from tagcons.posts.suggest import suggest_tags

    config = SuggestConfig(cache=world["cache"], posts=world["posts"], out=world["root"] / f"{name}.parquet", **kw)
    return suggest_tags(config)


def test_suggestions_equal_a_brute_force_cosine_top_k_re_ranked_by_the_head(scored_world):
    from tagcons.cache import open as open_cache
    from tagcons.posts.score import PostScorer

    summary = _suggest(scored_world, "suggest", run=scored_world["run"], k=5, candidates=12)
    got = pd.read_parquet(summary.out)
    with open_cache(scored_world["cache"]) as cache:
        texts = np.array(cache.keys("texts"), dtype=object)
        txt = cache.text_embeddings(normalise=True)
        image = "cat_005.png"
        img = cache.read_rows("images", [cache.index("images")[image]], normalise=True)[0]
        nearest = texts[np.argsort(-(txt @ img), kind="stable")[:12]]
        expected = PostScorer(cache, scored_world["run"]).score_pairs([image] * 12, nearest)["expected"].to_numpy()
    want = list(nearest[np.argsort(-expected, kind="stable")[:5]])
    mine = got[got["image"] == image].sort_values("rank")
    assert list(mine["hashtag"]) == want and list(mine["rank"]) == [1, 2, 3, 4, 5]
    own = set(scored_world["data"].texts[scored_world["data"].images == image])
    assert list(mine["in_post"]) == [tag in own for tag in want]  # the post's own tags marked, not dropped
    assert summary.posts_without_image == 2 and got["post_id"].nunique() == 22


def test_without_a_run_suggestions_are_the_nearest_hashtags_and_hnsw_finds_them_too(scored_world):
    exact = pd.read_parquet(_suggest(scored_world, "cosine_exact", k=4).out)
    assert (exact.groupby("post_id")["cosine"].apply(lambda c: bool(np.all(np.diff(c.to_numpy()) <= 1e-7)))).all()
    approx = pd.read_parquet(_suggest(scored_world, "cosine_hnsw", k=4, index="hnsw").out)
    pairs = lambda f: set(zip(f["post_id"], f["hashtag"]))  # noqa: E731
    assert len(pairs(exact) & pairs(approx)) / len(pairs(exact)) >= 0.95  # recall@4 on a small vocabulary


def test_a_vocabulary_without_cached_hashtags_is_refused_and_one_with_some_is_counted(scored_world, tmp_path, caplog):
    none_cached = tmp_path / "vocab.txt"
    none_cached.write_text("#nothing\n#here\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"vocab\.txt: no hashtag of the vocabulary has a cached text embedding"):
        _suggest(scored_world, "no_vocab", vocab=none_cached)
    some = tmp_path / "some.txt"
    some.write_text("#tag_000_1\ntag_001_2\nunknown\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="tagcons.posts.suggest"):
        summary = _suggest(scored_world, "some_vocab", vocab=some, k=3)
    assert summary.n_vocabulary == 2 and summary.n_vocabulary_not_cached == 1
    assert "1 hashtags of the vocabulary have no cached text embedding" in caplog.text
    assert set(pd.read_parquet(summary.out)["hashtag"]) == {"tag_000_1", "tag_001_2"}


def test_the_commands_print_their_counts_and_bad_input_exits_2_with_one_line(scored_world, tmp_path, capsys):
    from test_cli import run_cli

    base = ["--cache", scored_world["cache"], "--posts", scored_world["posts"]]
    code, out, _ = run_cli(["score", *base, "--run", scored_world["run"], "--out", tmp_path / "s.parquet"], capsys)
    assert code == 0 and "24 posts, 176 of 192 hashtags scored" in out
    assert "2 posts have an image missing from or failed in the cache" in out
    code, out, _ = run_cli(["suggest", *base, "--k", "3", "--out", tmp_path / "g.parquet"], capsys)
    assert code == 0 and "66 suggestions for 22 posts" in out
    code, _, err = run_cli(["score", *base, "--post-col", "nope", "--out", tmp_path / "x.parquet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no column 'nope'" in err and "--post-col" in err


def test_embed_posts_encodes_each_unique_image_and_hashtag_once_keyed_without_hash(tmp_path, capsys):
    from embed_helpers import assert_same_contents, cache_contents, embed, make_image_set
    from test_cli import run_cli

    pairs, images = make_image_set(tmp_path, n_images=4, tags_per_image=3)
    frame = pd.read_csv(pairs)
    posts = frame.groupby("Image Filename")["Hashtag"].apply(lambda t: " ".join(f"#{x.lstrip('#')}" for x in t))
    posts = posts.reset_index().rename(columns={"Image Filename": "file", "Hashtag": "caption"})
    posts.insert(0, "post_id", range(len(posts)))
    posts = pd.concat([posts, posts.iloc[:1]])  # a repeated post: its image and tags embedded once
    posts.to_csv(tmp_path / "posts.csv", index=False)
    args = ["embed", "--posts", tmp_path / "posts.csv", "--image-col", "file", "--images", images, "--strip-hash"]
    code, out, err = run_cli([*args, "--backbone", "tiny", "--out", tmp_path / "p.h5", "--workers", "0"], capsys)
    assert code == 0, err
    got = cache_contents(tmp_path / "p.h5")
    assert sorted(got["images"]) == sorted(frame["Image Filename"].unique())
    # The caption's tags are the pairs' hashtags without '#' and cut at the space ('#파랑 하늘' gives '파랑').
    want = {tag.lstrip("#").split(" ")[0] for tag in frame["Hashtag"]}
    assert set(got["texts"]) == want
    embed(pairs, images, tmp_path / "pairs.h5", strip_hash=True)  # the same keys from pairs, --strip-hash
    from_pairs = cache_contents(tmp_path / "pairs.h5")
    shared = {"images": from_pairs["images"], "texts": {k: v for k, v in from_pairs["texts"].items() if k in want}}
    assert_same_contents({**got, "texts": {k: got["texts"][k] for k in shared["texts"]}}, {**from_pairs, **shared})


def test_posts_tags_are_keyed_as_a_pairs_files_hashtags(tmp_path, capsys):
    from embed_helpers import cache_contents, make_image_set
    from test_cli import run_cli

    pairs, images = make_image_set(tmp_path, n_images=2, tags_per_image=2)
    pd.DataFrame({"post_id": [1], "image": ["cat_00.png"], "hashtags": ['["빨강", "#초록"]']}).to_csv(
        tmp_path / "posts.csv", index=False
    )
    args = ["embed", "--posts", tmp_path / "posts.csv", "--images", images, "--backbone", "tiny", "--workers", "0"]
    assert run_cli([*args, "--out", tmp_path / "kept.h5"], capsys)[0] == 0
    assert set(cache_contents(tmp_path / "kept.h5")["texts"]) == {"빨강", "#초록"}  # as written, as pairs are


def test_embed_takes_pairs_or_posts_not_both(tmp_path, capsys):
    from embed_helpers import make_image_set
    from test_cli import run_cli

    pairs, images = make_image_set(tmp_path, n_images=2, tags_per_image=1)
    base = ["embed", "--images", images, "--backbone", "tiny", "--out", tmp_path / "x.h5"]
    code, _, err = run_cli([*base, "--data", pairs, "--posts", pairs], capsys)
    assert code == 2 and "not both" in err
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "a pairs file (--data) or a posts file (--posts)" in err


def test_the_notebook_api_returns_what_the_commands_write(scored_world):
    from tagcons.posts import score_frame, suggest_hashtags

    posts = pd.read_csv(scored_world["posts"], dtype=str)
    pairs, per_post = score_frame(posts, scored_world["cache"], run=scored_world["run"])
    written = pd.read_parquet(_score(scored_world, "api", run=scored_world["run"]).out)
    np.testing.assert_allclose(pairs["expected"].to_numpy(float), written["expected"].to_numpy(float))
    assert list(pairs["rank"].astype("Int32")) == list(written["rank"].astype("Int32"))
    assert len(per_post) == 24
    best = suggest_hashtags(["cat_005.png"], scored_world["cache"], run=scored_world["run"], k=5, candidates=12)
    by_command = pd.read_parquet(_suggest(scored_world, "api_suggest", run=scored_world["run"], k=5, candidates=12).out)
    assert list(best["hashtag"]) == list(by_command.loc[by_command["image"] == "cat_005.png", "hashtag"])


def test_posts_built_from_the_studys_table_are_scored_whole_from_a_tag_list_and_from_captions(tmp_path, reference_csv):
    """The study's 2,022 pairs as one post per image (its images were never published: random embeddings)."""
    from test_heads_support import Synthetic

    from tagcons.data.post_tags import TAG_PATTERN
    from tagcons.heads import fit_head

    table = pd.read_csv(reference_csv, encoding="utf-8-sig")
    table["Hashtag"] = table["Hashtag"].astype(str).str.normalize("NFC").str.strip().str.lstrip("#")  # as embed keys
    table = table.drop_duplicates(["Image Filename", "Hashtag"])
    rng = np.random.default_rng(0)
    data = Synthetic(
        table["Image Filename"].to_numpy(),
        table["Hashtag"].to_numpy(),
        table["Score"].to_numpy(),
        {key: rng.normal(size=8) for key in table["Image Filename"].unique()},
        {key: rng.normal(size=8) for key in table["Hashtag"].unique()},
    )
    cache = write_cache(data, tmp_path / "study.h5", settings={"strip_hash": True})
    config = FitHeadConfig(
        data=write_pairs(data, tmp_path / "pairs.csv"), cache=cache, head="logreg", out=tmp_path / "run"
    )
    run = fit_head(config).run_dir
    posts = table.groupby("Image Filename", sort=False)["Hashtag"].apply(list).reset_index()
    posts.columns = ["image", "tags"]
    posts["hashtags"] = posts["tags"].map(json.dumps)
    posts["caption"] = posts["tags"].map(lambda tags: "today " + " ".join(f"#{tag}" for tag in tags) + " 🌅")
    posts.insert(0, "post_id", range(len(posts)))
    posts.drop(columns="tags").to_csv(tmp_path / "posts.csv", index=False)
    listed = score_posts(ScoreConfig(cache=cache, posts=tmp_path / "posts.csv", out=tmp_path / "l.parquet", run=run))
    scored = pd.read_parquet(listed.out)
    assert listed.n_scored == len(table) == len(scored) and (scored["status"] == "ok").all()
    assert scored.groupby("post_id")["rank"].max().sum() == len(table)  # ranks 1..n in every post
    captions = PostColumns(caption="caption", hashtags="none")  # no such column: the tags come from the captions
    from_captions = ScoreConfig(
        cache=cache, posts=tmp_path / "posts.csv", out=tmp_path / "c.parquet", run=run, columns=captions
    )
    captioned = pd.read_parquet(score_posts(from_captions).out)
    whole = table["Hashtag"].map(lambda tag: TAG_PATTERN.fullmatch(f"#{tag}") is not None)  # tags a caption can carry
    assert set(zip(captioned["image"], captioned["hashtag"])) >= set(
        zip(table.loc[whole, "Image Filename"], table.loc[whole, "Hashtag"])
    )
    assert (captioned["status"] == "ok").mean() >= whole.mean() - 0.01
