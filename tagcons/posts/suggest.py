"""`tagcons suggest`: for each post's image, the K best hashtags of a vocabulary.

Candidates are the `candidates` hashtags nearest the image by cosine (FAISS inner product over
L2-normalised embeddings: exact by default, HNSW behind `index="hnsw"` for vocabularies past ~1M),
then re-ranked by the run's expected score (ties by cosine); without a run the cosine order stands.
Hashtags the post already has are marked (`in_post`), not dropped. Posts whose image is missing from
or failed in the cache get no rows and are counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import SUGGEST_INDEXES, SuggestConfig
from tagcons.data.post_tags import normalise_tag
from tagcons.data.posts import ExplodeStats, explode_posts, read_posts
from tagcons.errors import BadInputError
from tagcons.posts.keys import OK
from tagcons.posts.score import PostScorer
from tagcons.table_out import RowGroupWriter, check_output

log = logging.getLogger(__name__)

HNSW_NEIGHBOURS = 32
HNSW_SEARCH_DEPTH = 128


@dataclass
class Vocabulary:
    tags: np.ndarray  # hashtags with cached text embeddings
    embeds: np.ndarray  # [n, d] L2-normalised float32
    n_not_cached: int = 0


def load_vocabulary(scorer: PostScorer, path: Path | None) -> Vocabulary:
    """The hashtags to suggest from: a file's (one a line, or a table's `hashtag`/first column) or the cache's."""
    keys = scorer.keys
    tags = keys.cache.keys("texts") if path is None else _read_vocabulary(path, scorer.strip_hash)
    tags = np.asarray(tags, dtype=object)
    rows = keys.positions("texts", tags)
    cached = rows >= 0
    if not cached.any():
        where = "the cache" if path is None else str(path)
        raise BadInputError(f"{where}: no hashtag of the vocabulary has a cached text embedding; embed them first")
    order = np.argsort(rows[cached], kind="stable")
    return Vocabulary(tags[cached][order], keys.read("texts", rows[cached][order]), int((~cached).sum()))


def _read_vocabulary(path: Path, strip_hash: bool) -> list[str]:
    if not path.is_file():
        raise BadInputError(f"{path}: no such vocabulary file; give one hashtag a line, or a table with --vocab")
    if path.suffix.lower() in (".csv", ".tsv", ".parquet"):
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else _delimited(path)
        values = frame["hashtag"] if "hashtag" in frame.columns else frame.iloc[:, 0]
    else:
        values = pd.Series(path.read_text(encoding="utf-8-sig").splitlines())
    tags = [normalise_tag(str(v), strip_hash) for v in values.dropna()]
    return list(dict.fromkeys(tag for tag in tags if tag))


def _delimited(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str)


def build_index(embeds: np.ndarray, kind: str = "exact"):
    """A FAISS inner-product index over normalised rows (cosine similarity)."""
    import faiss

    if kind not in SUGGEST_INDEXES:
        raise BadInputError(f"--index {kind!r}: choose one of {', '.join(SUGGEST_INDEXES)}")
    d = embeds.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_SEARCH_DEPTH
    index.add(np.ascontiguousarray(embeds, dtype=np.float32))
    return index


def suggest_for_images(scorer: PostScorer, vocab: Vocabulary, index, images, k: int, candidates: int) -> pd.DataFrame:
    """Per image key (all must be in the cache): its k best hashtags, `rank` 1 first, with cosine and expected."""
    images = np.asarray(images, dtype=object)
    n_candidates = min(max(candidates, k), len(vocab.tags))
    rows = scorer.keys.positions("images", images)
    cosine, found = index.search(scorer.keys.read("images", rows), n_candidates)
    image_of = np.repeat(np.arange(len(images)), n_candidates)
    frame = pd.DataFrame({"image": images[image_of], "hashtag": vocab.tags[found.ravel()], "cosine": cosine.ravel()})
    if scorer.run is not None:
        frame["expected"] = scorer.score_pairs(frame["image"], frame["hashtag"])["expected"].to_numpy()
    frame["_image"] = image_of
    return _top_k(frame, k, by="expected" if scorer.run is not None else "cosine")


def _top_k(frame: pd.DataFrame, k: int, by: str) -> pd.DataFrame:
    keys = [frame["cosine"].to_numpy(), frame[by].to_numpy(), frame["_image"].to_numpy()]
    order = np.lexsort((-keys[0], -keys[1], keys[2]))  # per image: best `by` first, then cosine
    ranked = frame.iloc[order].reset_index(drop=True)
    ranked["rank"] = ranked.groupby("_image").cumcount() + 1
    return ranked[ranked["rank"] <= k].drop(columns="_image").reset_index(drop=True)


@dataclass
class SuggestSummary:
    out: Path
    stats: ExplodeStats = field(default_factory=ExplodeStats)
    n_suggested: int = 0
    n_vocabulary: int = 0
    n_vocabulary_not_cached: int = 0
    posts_without_image: int = 0


def suggest_tags(config: SuggestConfig) -> SuggestSummary:
    """Stream a posts file into OUT: k rows per post whose image is cached."""
    check_output(config.out, config.overwrite)
    if config.k < 1 or config.candidates < 1:
        raise BadInputError(f"--k {config.k} and --candidates {config.candidates}: give whole numbers of 1 or more")
    from tagcons.heads.join import open_cache

    summary = SuggestSummary(config.out)
    with open_cache(config.cache) as cache:
        scorer = PostScorer(cache, config.run)
        vocab = load_vocabulary(scorer, config.vocab)
        summary.n_vocabulary, summary.n_vocabulary_not_cached = len(vocab.tags), vocab.n_not_cached
        index = build_index(vocab.embeds, config.index)
        with RowGroupWriter(config.out) as writer:
            for chunk in read_posts(config.posts, config.columns, config.chunk_posts):
                exploded = explode_posts(chunk, config.columns, config.posts, scorer.strip_hash)
                writer.write(_suggest_chunk(scorer, vocab, index, exploded, config, summary))
                summary.stats.add(exploded.stats)
    _warn(summary, config)
    return summary


def _suggest_chunk(scorer, vocab, index, exploded, config: SuggestConfig, summary: SuggestSummary) -> pd.DataFrame:
    status = scorer.keys.image_status(exploded.image_keys)
    cached = np.flatnonzero(status == OK)
    summary.posts_without_image += len(status) - len(cached)
    unique = pd.unique(exploded.image_keys[cached])
    best = suggest_for_images(scorer, vocab, index, unique, config.k, config.candidates)
    posts = exploded.posts.drop(columns=["n_tags", exploded.tag_column]).iloc[cached]  # the tags would repeat k times
    posts = posts.assign(_image=exploded.image_keys[cached], _post=cached).reset_index(drop=True)
    merged = posts.merge(best.rename(columns={"image": "_image"}), on="_image", how="inner", sort=False)
    merged = merged.sort_values(["_post", "rank"], kind="stable").reset_index(drop=True)
    merged["in_post"] = _in_post(exploded, merged)
    summary.n_suggested += len(merged)
    return merged.drop(columns=["_image", "_post"])


def _in_post(exploded, merged: pd.DataFrame) -> np.ndarray:
    own = set(zip(exploded.pairs["post"].to_numpy(), exploded.pairs["hashtag"].to_numpy()))
    return np.array([(post, tag) in own for post, tag in zip(merged["_post"], merged["hashtag"])], dtype=bool)


def _warn(summary: SuggestSummary, config: SuggestConfig) -> None:
    summary.stats.warn(config.posts)
    if summary.posts_without_image:
        log.warning(
            "%s: %d posts have an image missing from or failed in the cache %s: no suggestions for them",
            config.posts,
            summary.posts_without_image,
            config.cache,
        )
    if summary.n_vocabulary_not_cached:
        log.warning(
            "%s: %d hashtags of the vocabulary have no cached text embedding and are left out",
            config.vocab,
            summary.n_vocabulary_not_cached,
        )
