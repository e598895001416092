"""Every command's config dataclass, and the pair column names they share.

One source of truth for settings and their defaults: the library takes these dataclasses and the CLI
reads its flag defaults from their fields (`field_default`). The module imports only the standard
library and the ground floor (labels, runtime), so `tagcons --help` can read every default without
loading pandas, torch or a head. Paths are `pathlib.Path` (a `str` given by a library caller is
converted on construction); column names come as one `PairColumns`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tagcons.labels import DEFAULT_SCALE
from tagcons.runtime import default_workers

PATH_TYPES = ("Path", "Path | None")  # field annotations (text: `from __future__ import annotations`)
PATH_LIST_TYPES = ("list[Path]",)


def field_default(config_class, name: str):
    """The default of one field of a config dataclass (its factory called); the CLI's flag defaults."""
    found = {f.name: f for f in dataclasses.fields(config_class)}[name]
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return None if found.default is dataclasses.MISSING else found.default


class PathFields:
    """Mixin for config dataclasses: fields annotated `Path` accept a `str` and hold a `Path`."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.type in PATH_TYPES and value is not None:
                setattr(self, spec.name, Path(value))
            elif spec.type in PATH_LIST_TYPES:
                setattr(self, spec.name, [Path(item) for item in value])


@dataclass(frozen=True)
class PairColumns:
    """Names of the columns in the user's file (the study's by default)."""

    image: str = "Image Filename"
    text: str = "Hashtag"
    label: str = "Score"


@dataclass(frozen=True)
class PostColumns:
    """Names of the columns of a posts file: one row per post, its image and its hashtags.

    The hashtags come from `hashtags` (a list, a JSON list or tags split on white space/commas) when the
    file has that column, else they are extracted from the `caption` column."""

    post_id: str = "post_id"
    image: str = "image"
    hashtags: str = "hashtags"
    caption: str = "caption"


@dataclass
class ScoreConfig(PathFields):
    """`tagcons score`: every (post, hashtag) of a posts file scored; `run` None: cosine and CLIPScore only."""

    cache: Path
    posts: Path
    out: Path
    run: Path | None = None
    posts_out: Path | None = None  # the per-post table; None: OUT with .posts.parquet
    columns: PostColumns = field(default_factory=PostColumns)
    misfit_score: int | None = None  # a tag is a misfit when p(score <= this) >= misfit_p; None: the scale's low + 1
    misfit_p: float = 0.5
    chunk_posts: int = 20000  # posts read, joined and scored at a time (memory does not grow with the file)
    overwrite: bool = False
    progress: bool = False


ENGINES = ("local", "ray")  # embed --engine; ray: tagcons.embed.ray_engine
SUGGEST_INDEXES = ("exact", "hnsw")  # FAISS: brute-force inner product; HNSW graph (approximate)


@dataclass
class SuggestConfig(PathFields):
    """`tagcons suggest`: per post's image the K best hashtags of a vocabulary (FAISS candidates, head re-rank)."""

    cache: Path
    posts: Path
    out: Path
    run: Path | None = None  # None: rank the candidates by cosine alone
    vocab: Path | None = None  # a file of hashtags (one a line, or a table's first column); None: the cache's
    k: int = 20
    candidates: int = 100  # nearest hashtags by cosine the head re-ranks (at least k)
    index: str = "exact"  # "exact" (inner product, brute force) or "hnsw" (approximate, for 1M+ hashtags)
    columns: PostColumns = field(default_factory=PostColumns)
    chunk_posts: int = 20000
    overwrite: bool = False
    progress: bool = False


@dataclass
class EmbedConfig(PathFields):
    data: Path | None  # a pairs file, or None with `posts`
    images: Path
    backbone: str
    out: Path
    revision: str | None = None
    batch_size: int = 64
    workers: int | None = None  # decode workers; None: chosen for the device (tagcons.runtime.embed_workers)
    device: str = "auto"
    dtype: str = "auto"
    text_templates: tuple[str, ...] = ("{}",)  # several: a prompt ensemble (mean of normalised features)
    strip_hash: bool = False
    store_dtype: str = "float32"
    strict: bool = False
    shard: tuple[int, int] | None = None
    columns: PairColumns = field(default_factory=PairColumns)
    # A crash loses at most one uncommitted chunk: commit every `commit_rows` rows or `commit_seconds`,
    # whichever comes first (few part files on a GPU, little lost work on a slow CPU).
    commit_rows: int = 16384
    commit_seconds: float = 30.0
    progress: bool = False
    decode: str = "cpu"  # "gpu": JPEGs decoded and preprocessed on the CUDA device (tagcons.embed.gpu_decode)
    compile: bool = False  # torch.compile the image encoder
    posts: Path | None = None  # a posts file instead of `data`: its images and hashtags (keyed as the cache's)
    post_columns: PostColumns = field(default_factory=PostColumns)
    runtime: str = "torch"  # "onnx" / "onnx-int8": the towers run by ONNX Runtime (tagcons.embed.onnx_runtime)
    engine: str = "local"  # "ray": Ray Data operators on a local or joined Ray (tagcons.embed.ray_engine)
    ray_address: str | None = None  # join this Ray cluster (None: start a small local Ray)


@dataclass
class FitHeadConfig(PathFields):
    data: Path
    head: str
    out: Path
    # required unless the head needs no features (text-only, image-prior); with one they use its rows
    cache: Path | None = None
    split: str = "images"  # "images" (grouped, no leak) or "pairs" (the study's split)
    cv: int | None = None  # K folds instead of one train/test split
    features: str = "concat"  # "concat" or "rich"
    seed: int = 42
    objective: str | None = None  # threshold: macro_f1|qwk; lgbm: multiclass|regression
    test_size: float = 0.2
    dedupe: str | None = None  # "none" | "exact"; None: exact for the images split, none for pairs
    repeats: int = 1  # repeat the split (or the CV) with seeds seed..seed+repeats-1
    scale: str = str(DEFAULT_SCALE)  # "LOW-HIGH" (the study's 1-5) or "auto": the labels' own range
    columns: PairColumns = field(default_factory=PairColumns)
    strip_hash: bool | None = None  # None: as the cache was embedded (its settings record --strip-hash)
    head_params: dict = field(default_factory=dict)  # head-specific hyperparameters, e.g. {"recipe": "robust"}
    overwrite: bool = False
    progress: bool = False
    decode: str = "argmax"  # "expected": sum k * p_k cut at four points chosen on the validation side
    val_size: float = 0.1  # share of the training side held out to fit the temperature and the cuts
    exclude_pairs: Path | None = None  # a CSV with image and hashtag columns (e.g. audit.csv): off the training side
    folds: Path | None = None  # given folds: a file with a fold number per pair (instead of --split / --cv)
    key_col: str | None = None  # joins --folds to the pairs on this column when both have it (else image + hashtag)
    fold_col: str = "fold"
    allow_split_images: bool = False  # accept given folds that put one image's pairs in two folds


PAIR_CHUNK_ROWS = 100_000  # predict's --chunk-rows: pairs read, joined, scored and written at a time


@dataclass
class PredictConfig(PathFields):
    run: Path
    cache: Path
    data: Path
    out: Path
    columns: PairColumns | None = None  # None: the columns the run was fitted with
    strip_hash: bool | None = None  # None: as the cache was embedded
    images: Path | None = None  # the images folder, only to spell out the embed command
    progress: bool = False
    overwrite: bool = False  # replace an existing --out file
    chunk_rows: int = PAIR_CHUNK_ROWS  # memory depends on it, not on the number of pairs


AUDIT_RANKINGS = ("ordinal-distance", "self-confidence")  # `tagcons audit --rank-by`; docs/audit.md


@dataclass
class AuditConfig(PathFields):
    cache: Path
    data: Path
    out: Path
    head: str = "lgbm"
    folds: int = 5
    features: str = "rich"  # the fold models see more with rich features (docs/audit.md: detection by setting)
    seed: int = 42
    columns: PairColumns = field(default_factory=PairColumns)
    head_params: dict = field(default_factory=dict)
    val_size: float = 0.1
    progress: bool = False
    scale: str = str(DEFAULT_SCALE)  # the score scale, as fit-head takes it ("auto": the labels' own range)
    folds_file: Path | None = None  # given folds instead of --folds K generated ones (as fit-head --folds)
    key_col: str | None = None
    fold_col: str = "fold"
    allow_split_images: bool = False
    rank_by: str = "ordinal-distance"  # or "self-confidence" (cleanlab's own ranking); docs/audit.md
    overwrite: bool = False  # replace an audit already in --out


@dataclass
class EvaluateConfig(PathFields):
    """`tagcons evaluate`: a predictions file made by any tool, scored against the pairs it predicts."""

    predictions: Path
    data: Path
    out: Path
    pred_col: str = "pred"
    true_col: str | None = None  # checked against the pairs file's score (after pred_offset) when given
    fold_col: str | None = None  # per-fold metrics, their mean and sd, beside the pooled out-of-fold ones
    proba_cols: tuple[str, ...] = ()  # one per score of the scale, lowest first
    key_col: str | None = None  # joined on this column when both files have it, else on image + hashtag
    pred_offset: int = 0  # added to predicted and true scores of the predictions file (1 for 0-4 labels)
    scale: str = str(DEFAULT_SCALE)
    columns: PairColumns = field(default_factory=PairColumns)
    seed: int = 42  # the bootstrap's resamples, as fit-head's
    overwrite: bool = False


@dataclass
class ReportConfig(PathFields):
    run_dirs: list[Path]
    out: Path
    images: Path | None = None  # thumbnails in the galleries; text only without it
    data: Path | None = None  # the pairs file, for --category-col
    category_col: str | None = None
    category_from: str | None = None  # a regex with one group, applied to the image key
    worst: int = 12  # pairs per gallery
    columns: PairColumns = field(default_factory=PairColumns)
    overwrite: bool = False  # replace an existing --out page
    audit: Path | None = None  # a `tagcons audit --out` folder to show (run folders holding one are shown anyway)


@dataclass
class FinetuneConfig(PathFields):
    """Every setting of `tagcons finetune`; field names are the CLI flags (underscores for dashes).

    A field left at None takes its recipe's value (`tagcons.finetune.config.resolve`).
    """

    data: Path
    images: Path
    backbone: str
    out: Path
    recipe: str = "robust"
    revision: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    split: str = "images"
    dedupe: str | None = None  # "none" | "exact"; None: exact for the images split, none for pairs
    test_size: float = 0.2
    val_size: float = 0.1
    seed: int = 42
    resume: bool = False
    overwrite: bool = False  # replace a fine-tuning run already in --out (not with resume)
    # optimisation (None: the recipe's value)
    optimizer: str | None = None
    lr: float | None = None
    head_lr: float | None = None
    weight_decay: float | None = None
    layer_decay: float | None = None
    schedule: str | None = None
    warmup: float | None = None  # share of optimiser steps spent warming up (cosine schedule)
    step_size: int | None = None  # epochs per StepLR step (step schedule)
    gamma: float | None = None
    grad_clip: float | None = None  # 0 disables clipping
    class_weights: bool | None = None
    patience: int | None = None  # epochs without a better validation QWK before stopping; 0 never stops
    # what trains
    unfreeze_vision: int | None = None  # last N vision blocks train; -1 the whole tower, 0 none
    unfreeze_text: int | None = None
    lp_init: bool | None = None  # LP-FT: start the head from a linear probe on frozen features
    init_head: Path | None = None  # a fit-head run (logreg or mlp) to start the head from
    allow_unverified_init: bool = False  # accept an --init-head run that does not record its training rows
    dropout: float = 0.3
    hidden: int = 256
    # machinery
    precision: str = "auto"
    grad_checkpointing: bool = False
    wise_alpha: float = 1.0
    device: str = "auto"
    workers: int = 2
    columns: PairColumns = field(default_factory=PairColumns)  # recorded as image_col, text_col, label_col
    strip_hash: bool = False
    scale: str = str(DEFAULT_SCALE)  # "LOW-HIGH" (the study's 1-5) or "auto": the labels' own range
    text_templates: tuple[str, ...] = ("{}",)  # as embed's --text-template; several: a prompt ensemble
    # given folds (as fit-head --folds): train on every fold but test_fold, test on test_fold
    folds: Path | None = None
    test_fold: int | None = None
    key_col: str | None = None
    fold_col: str = "fold"
    allow_split_images: bool = False
    progress: bool = False

    @property
    def run_dir(self) -> Path:
        return self.out

    def to_dict(self) -> dict:
        """The record config.json keeps and `--resume` compares: paths as text, the columns as the flat
        keys `image_col`, `text_col` and `label_col` (the format runs have always been written in)."""
        record = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "columns":
                record.update(image_col=value.image, text_col=value.text, label_col=value.label)
            elif spec.name not in ("progress", "resume"):
                record[spec.name] = str(value) if isinstance(value, Path) else value
        record["text_templates"] = list(self.text_templates)  # as JSON gives it back, for --resume
        return record


DEMO_HEADS = ("threshold", "logreg", "mlp", "lgbm", "ordinal", "text-only", "image-prior")


@dataclass(frozen=True)
class DemoConfig:
    """Size and seed of the demo set; the same config always gives the same files."""

    n_images: int = 150
    pairs_per_image: int = 12
    image_size: int = 224
    seed: int = 0
    duplicate_fraction: float = 0.01  # share of rows repeated verbatim (the study has such rows)
    flip_fraction: float = 0.05  # share of rows given a wrong score (listed in flipped.csv)


@dataclass
class DemoRunConfig(PathFields):
    out: Path = Path("demo_out")
    data: DemoConfig = field(default_factory=DemoConfig)
    heads: tuple[str, ...] = DEMO_HEADS
    finetune_epochs: int = 3  # 0 skips the fine-tune
    workers: int = field(default_factory=default_workers)
    progress: bool = False
