"""A deterministic synthetic demo set in the study's format: drawn images plus scored Korean hashtags.

`make_demo_set(out_dir, DemoConfig())` writes `out_dir/pairs.csv` (UTF-8, columns
`Image Filename, Hashtag, Score, Hashtag_en`, like the study's file) and `out_dir/images/`
(`<scene>_<nn>.png`, e.g. `sea_01.png`). The same config always gives byte-identical files.

What an image shows (all drawn with PIL, large flat colour regions so that even a randomly
initialised encoder sees them):

- a **scene**, which fills the background and names the file: 바다 (sea: pale sky over a blue sea
  with white waves), 하늘 (sky: blue gradient with white clouds), 밤 (night: near-black with a
  moon), 숲 (forest: green with dark trees), 노을 (sunset: orange gradient with a low sun),
  눈 (snow: white with grey flakes). Each scene has a **scene colour** (파랑, 파랑, 검정, 초록,
  주황, 하양) and a drawn **scene element** (파도, 구름, 달, 나무, 석양, 겨울);
- one large centred **object** whose colour is the **object colour** (one of 빨강 주황 노랑 초록
  파랑 보라 검정 하양, never the scene colour) and whose **shape** is one of 동그라미 네모 세모
  별 줄무늬;
- on about one image in five, a white label with **text-like marks** (글씨).

Scoring rule (how well the hashtag describes the picture; the tag's '#' and spelling variant do
not matter: '#빨강' and '빨간색', or '#주황' and '#orange', name the same concept):

====  =====================================================================================
5     names the object colour, the scene (바다, '바다view', ...) or the scene's element (파도)
4     names a secondary attribute: the object's shape, the scene colour (파랑 on a sea
      image), or 글씨 when the image has text marks
3     related but absent: a colour-wheel neighbour of the object colour (빨강-주황-노랑-초록-
      파랑-보라-빨강), a near-miss scene or its element (바다~하늘, 하늘~노을, 노을~밤); or a
      mild generic tag (#일상 #데일리 #소통 #daily)
2     absent: another scene or element, another shape, 글씨 without text marks; or an
      engagement tag (#좋아요 #맞팔 #선팔 #ootd)
1     contradicts the picture: any other colour (다른 색)
====  =====================================================================================

Rules are checked top-down, so a colour that is both the scene colour and a neighbour scores 4.
Each image gets `pairs_per_image` distinct tags; how many of each score is drawn so that the whole
set follows the study's skew (1: 4%, 2: 10%, 3: 16%, 4: 27%, 5: 43%), then the tags are picked
at random within each score (generic tags four times as likely as others). Then 5% of the rows
(`flip_fraction`) get a wrong score, as a careless rater gives: moved two or three steps away from
the rule's score (5 -> 3 or 2, 1 -> 3 or 4); `out_dir/flipped.csv` lists them with the rule's
score, so `tagcons audit` has real errors to find and its list can be checked. About 1% of rows are
then repeated verbatim (`duplicate_fraction`), as in the study.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagcons.configs import DemoConfig
from tagcons.demo.drawing import COLOUR_RGB, ImageSpec, draw_image
from tagcons.errors import BadInputError

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.csv"
FLIPPED_FILE = "flipped.csv"
IMAGES_DIR = "images"
CSV_COLUMNS = ("Image Filename", "Hashtag", "Score", "Hashtag_en")
# The study's score distribution (scores 1..5), which the tag sampling reproduces.
TARGET_SHARE = np.array([0.04, 0.10, 0.16, 0.27, 0.43])

# Neighbours on the colour wheel: "related but absent" (score 3). 검정/하양 have none.
COLOUR_NEIGHBOURS = {
    "빨강": ("주황", "보라"),
    "주황": ("빨강", "노랑"),
    "노랑": ("주황", "초록"),
    "초록": ("노랑", "파랑"),
    "파랑": ("초록", "보라"),
    "보라": ("파랑", "빨강"),
    "검정": (),
    "하양": (),
}
# scene -> (file category, scene colour, element concept)
SCENES = {
    "바다": ("sea", "파랑", "파도"),
    "하늘": ("sky", "파랑", "구름"),
    "밤": ("night", "검정", "달"),
    "숲": ("forest", "초록", "나무"),
    "노을": ("sunset", "주황", "석양"),
    "눈": ("snow", "하양", "겨울"),
}
NEAR_SCENES = {"바다": ("하늘",), "하늘": ("바다", "노을"), "노을": ("하늘", "밤"), "밤": ("노을",), "숲": (), "눈": ()}
SHAPES = ("동그라미", "네모", "세모", "별", "줄무늬")
GENERIC_SCORES = {"#일상": 3, "#데일리": 3, "#소통": 3, "#daily": 3, "#좋아요": 2, "#맞팔": 2, "#선팔": 2, "#ootd": 2}
# Within a score, generic tags are drawn more often: Instagram captions are full of them.
SAMPLING_WEIGHT = {"generic": 4.0}
GENERIC_GLOSS = {
    "#일상": "#everyday",
    "#데일리": "#daily",
    "#소통": "#communication",
    "#daily": "#daily",
    "#좋아요": "#like",
    "#맞팔": "#follow_back",
    "#선팔": "#follow_first",
    "#ootd": "#ootd",
}


@dataclass(frozen=True)
class Tag:
    """One hashtag spelling: its text, English gloss, what kind of concept it names, and which."""

    text: str
    gloss: str
    kind: str  # colour | scene | element | shape | text | generic
    concept: str


def _tags(kind: str, concept: str, *spellings: tuple[str, str]) -> list[Tag]:
    return [Tag(text, gloss, kind, concept) for text, gloss in spellings]


VOCABULARY: tuple[Tag, ...] = tuple(
    _tags("colour", "빨강", ("#빨강", "#red"), ("빨간색", "red_colour"))
    + _tags("colour", "주황", ("#주황", "#orange"), ("#orange", "#orange"))
    + _tags("colour", "노랑", ("#노랑", "#yellow"), ("노란색", "yellow_colour"))
    + _tags("colour", "초록", ("#초록", "#green"), ("초록색", "green_colour"))
    + _tags("colour", "파랑", ("#파랑", "#blue"), ("#blue", "#blue"))
    + _tags("colour", "보라", ("#보라", "#purple"), ("보라색", "purple_colour"))
    + _tags("colour", "검정", ("#검정", "#black"), ("black", "black"))
    + _tags("colour", "하양", ("#하양", "#white"), ("흰색", "white_colour"))
    + _tags("scene", "바다", ("#바다", "#sea"), ("바다", "sea"), ("바다view", "sea_view"))
    + _tags("scene", "하늘", ("#하늘", "#sky"), ("하늘", "sky"), ("#하늘스타그램", "#skystagram"))
    + _tags("scene", "밤", ("#밤", "#night"), ("밤", "night"), ("#야경", "#night_view"))
    + _tags("scene", "숲", ("#숲", "#forest"), ("숲", "forest"), ("#forest", "#forest"))
    + _tags("scene", "노을", ("#노을", "#sunset_glow"), ("노을", "sunset_glow"), ("#sunset", "#sunset"))
    + _tags("scene", "눈", ("#눈", "#snow"), ("눈", "snow"), ("#눈오는날", "#snowy_day"))
    + _tags("element", "파도", ("#파도", "#waves"))
    + _tags("element", "구름", ("#구름", "#clouds"))
    + _tags("element", "달", ("#달", "#moon"))
    + _tags("element", "나무", ("#나무", "#trees"))
    + _tags("element", "석양", ("#석양", "#setting_sun"))
    + _tags("element", "겨울", ("#겨울", "#winter"))
    + _tags("shape", "동그라미", ("#동그라미", "#circle"), ("원", "circle"))
    + _tags("shape", "네모", ("#네모", "#square"), ("사각형", "rectangle"))
    + _tags("shape", "세모", ("#세모", "#triangle"), ("삼각형", "triangle"))
    + _tags("shape", "별", ("#별", "#star"), ("별모양", "star_shape"))
    + _tags("shape", "줄무늬", ("#줄무늬", "#stripes"), ("#stripes", "#stripes"))
    + _tags("text", "글씨", ("#글씨", "#lettering"), ("#손글씨", "#handwriting"))
    + [Tag(text, GENERIC_GLOSS[text], "generic", text) for text in GENERIC_SCORES]
)
ELEMENT_SCENE = {element: scene for scene, (_, _, element) in SCENES.items()}


@dataclass(frozen=True)
class DemoSet:
    pairs_csv: Path
    images_dir: Path
    n_pairs: int
    n_images: int
    flipped_csv: Path | None = None  # rows whose score was made wrong on purpose, with the rule's score


def score(tag: Tag, spec: ImageSpec) -> int:
    """The documented rule (module docstring): how well `tag` describes an image showing `spec`."""
    if tag.kind == "colour":
        return _colour_score(tag.concept, spec)
    if tag.kind in ("scene", "element"):
        scene = tag.concept if tag.kind == "scene" else ELEMENT_SCENE[tag.concept]
        return 5 if scene == spec.scene else 3 if scene in NEAR_SCENES[spec.scene] else 2
    if tag.kind == "shape":
        return 4 if tag.concept == spec.shape else 2
    if tag.kind == "text":
        return 4 if spec.has_text else 2
    return GENERIC_SCORES[tag.concept]


def _colour_score(colour: str, spec: ImageSpec) -> int:
    if colour == spec.colour:
        return 5
    if colour == SCENES[spec.scene][1]:
        return 4
    return 3 if colour in COLOUR_NEIGHBOURS[spec.colour] else 1


def make_demo_set(out_dir: str | Path, config: DemoConfig = DemoConfig()) -> DemoSet:
    """Draw the images and write the scored pairs under `out_dir`; returns where they are."""
    _check_config(config)
    out_dir = Path(out_dir)
    images_dir = out_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, int, str]] = []
    for index, spec in enumerate(image_specs(config)):
        rng = np.random.default_rng([config.seed, index, 1])
        draw_image(spec, config.image_size, rng).save(images_dir / spec.filename, format="PNG", optimize=False)
        rows.extend((spec.filename, tag.text, s, tag.gloss) for tag, s in _pick_tags(spec, config.pairs_per_image, rng))
    rows, flipped = flip_scores(rows, config.flip_fraction, np.random.default_rng([config.seed, 3]))
    rows = _add_duplicates(rows, config)
    pairs_csv = out_dir / PAIRS_FILE
    _write_csv(pairs_csv, rows)
    _write_csv(out_dir / FLIPPED_FILE, flipped, (*CSV_COLUMNS, "Rule Score"))
    log.info(
        "demo set: %d images, %d pairs (%d scores flipped) in %s", config.n_images, len(rows), len(flipped), out_dir
    )
    return DemoSet(pairs_csv, images_dir, len(rows), config.n_images, out_dir / FLIPPED_FILE)


def flip_scores(rows: list, share: float, rng: np.random.Generator) -> tuple[list, list]:
    """Give ``share`` of the rows a wrong score two or three steps from the rule's; returns
    (rows, flipped rows with the rule's score appended)."""
    chosen = set(rng.choice(len(rows), size=round(share * len(rows)), replace=False).tolist())
    out, flipped = [], []
    for i, (image, text, rule_score, gloss) in enumerate(rows):
        given = _wrong_score(rule_score, rng) if i in chosen else rule_score
        out.append((image, text, given, gloss))
        if i in chosen:
            flipped.append((image, text, given, gloss, rule_score))
    return out, flipped


def _wrong_score(rule_score: int, rng: np.random.Generator) -> int:
    step = 2 + int(rng.integers(0, 2))
    return rule_score - step if rule_score - step >= 1 else min(rule_score + step, 5)


def _check_config(config: DemoConfig) -> None:
    if config.n_images < 1:
        raise BadInputError(f"demo: n_images is {config.n_images}; it must be at least 1")
    if not 1 <= config.pairs_per_image <= len(VOCABULARY):
        raise BadInputError(f"demo: pairs_per_image is {config.pairs_per_image}; it must be 1-{len(VOCABULARY)}")
    if config.image_size < 32:
        raise BadInputError(f"demo: image_size is {config.image_size}; it must be at least 32 pixels")
    if not 0 <= config.duplicate_fraction < 1:
        raise BadInputError(f"demo: duplicate_fraction is {config.duplicate_fraction}; it must be in [0, 1)")
    if not 0 <= config.flip_fraction < 1:
        raise BadInputError(f"demo: flip_fraction is {config.flip_fraction}; it must be in [0, 1)")


def image_specs(config: DemoConfig) -> list[ImageSpec]:
    """The content of every image: scenes in turn, object colour/shape/text drawn from the seed."""
    rng = np.random.default_rng([config.seed, 0])
    scenes = list(SCENES)
    per_scene = [config.n_images // len(scenes) + (j < config.n_images % len(scenes)) for j in range(len(scenes))]
    specs = []
    for scene, count in zip(scenes, per_scene):
        colours = [c for c in COLOUR_RGB if c != SCENES[scene][1]]  # the object stands out from its scene
        for number in range(1, count + 1):
            specs.append(
                ImageSpec(
                    filename=f"{SCENES[scene][0]}_{number:02d}.png",
                    scene=scene,
                    colour=colours[rng.integers(len(colours))],
                    shape=SHAPES[rng.integers(len(SHAPES))],
                    has_text=bool(rng.random() < 0.2),
                )
            )
    return specs


def _pick_tags(spec: ImageSpec, n: int, rng: np.random.Generator) -> list[tuple[Tag, int]]:
    """`n` distinct tags for one image, with per-score counts that follow TARGET_SHARE."""
    pools = [[t for t in VOCABULARY if score(t, spec) == s] for s in range(1, 6)]
    counts = _fit_to_pools(_score_counts(n, rng), [len(p) for p in pools])
    picked = []
    for s, (pool, k) in enumerate(zip(pools, counts), start=1):
        if k == 0:
            continue
        weights = np.array([SAMPLING_WEIGHT.get(t.kind, 1.0) for t in pool])
        picked.extend((pool[i], s) for i in rng.choice(len(pool), size=k, replace=False, p=weights / weights.sum()))
    return [picked[i] for i in rng.permutation(len(picked))]


def _score_counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Whole counts per score: the floor of n*share plus one more with probability equal to the
    fractional part (systematic sampling), so the expected count is exactly n*share."""
    exact = n * TARGET_SHARE
    counts = np.floor(exact).astype(int)
    edges = np.concatenate([[0.0], np.cumsum(exact - counts)])
    return counts + np.diff(np.floor(edges - rng.random())).astype(int)


def _fit_to_pools(counts: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Move counts a pool cannot supply to the next lower score, then to any score with room."""
    counts, spill = counts.copy(), 0
    for i in reversed(range(5)):
        counts[i] += spill
        spill = max(0, counts[i] - sizes[i])
        counts[i] -= spill
    for i in reversed(range(5)):
        moved = min(spill, sizes[i] - counts[i])
        counts[i] += moved
        spill -= moved
    return counts


def _add_duplicates(rows: list, config: DemoConfig) -> list:
    """Repeat a few rows right after themselves, as the study's file does."""
    n_dup = round(len(rows) * config.duplicate_fraction)
    if not n_dup:
        return rows
    chosen = set(np.random.default_rng([config.seed, 2]).choice(len(rows), size=n_dup, replace=False).tolist())
    return [copy for i, row in enumerate(rows) for copy in ([row, row] if i in chosen else [row])]


def _write_csv(path: Path, rows: list, columns=CSV_COLUMNS) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
