"""Glyph-LT's source: characters rendered from the typefaces of pinned Debian font packages.

Pipeline (:func:`build_glyphs`), each step a pure function of the previous one's output:

1. :func:`discover_typefaces`: every face of every font file that ``dpkg -L`` lists for the
   pinned packages (so fonts installed by anything else never count).
2. :func:`font_info`: the character map must hold every class's character (fontTools).
3. :func:`render_typeface`: each class glyph rasterised by Pillow's FreeType at ``oversample`` x
   the output size, cropped to its ink, centred on a square with its aspect kept, a ``margin``
   around its longer side, box-filtered down to ``image_size`` (uint8 grayscale, ink = 255).
   The renders depend only on the font files and Pillow (its wheels bundle FreeType), whose
   versions are part of the cache key and of the provenance. A glyph without ink drops the face.
4. :func:`duplicates`: a face whose full set of class renders equals an earlier one's is dropped.
5. :func:`exclusions`, the rule against faces whose class images are not the classes' characters:
   - ``symbol``: the font declares itself a symbol font (a Microsoft symbol cmap, Panose family
     "Latin Pictorial" or the OS/2 "Symbol character set" code page);
   - ``not_characters``: :func:`character_structure` < ``min_structure``: its classes do not
     resemble one another the way characters do (dingbat, pattern and ornament fonts);
   - ``one_case``: :func:`case_similarity` >= ``max_case_similarity``: its lowercase classes are
     drawn as its capitals (titling, small-caps, caps-only fonts; or the reverse), so "a" and "A"
     would be one image under two labels;
   - ``pictures``: :func:`case_variety` < ``min_case_variety``: its lowercase classes are far more
     alike than its capitals, i.e. one picture repeated under several labels (skullcap draws a
     skull for every lowercase letter, so "e", "f" and "g" would be one image under three labels).
   Measured on the default packages (613 distinct faces, 47 classes): every face below 0.2
   structure is a dingbat or pattern font, or draws a class set that is not these characters
   (symmetry -0.13, lineding -0.08, 90stars -0.02, bitbttf, fauxsnow, bin01st, hdmaker 0.01,
   URW D050000L dingbats 0.04, snailets 0.12, grudge 0.17, vacantz 0.19: capitals in both cases);
   above it come 3dlet 0.25 (letters on cubes), then text faces from 0.27 (pdark; TeX Gyre
   Chorus and Z003, scripts, 0.28-0.29). URW StandardSymbolsPS (Greek, 0.29) goes by its flag.
   The case similarity has no clean gap: one-case faces sit at 0.9-1.0 (koneerie 0.90, upraise
   0.93, konector 0.95, pdark and powdwrk5 1.0), unicase designs with a real lowercase just below
   (falsepos 0.85), and a few caps-only outline faces too (chintzys, underwho 0.86).
   The case variety of skullcap is 0.36; the next faces are turmoil 0.56 (legible rough letters)
   and Nimbus Roman Bold 0.76; the rule is one-sided because block capitals are legitimately
   alike (jasper's capitals are 5x more alike than its lowercase).
   The thresholds are calibrated on the 47 classes; with far fewer classes the structure score
   is noisier (fewer pairs), and a pattern font may pass 0.2.
6. :func:`assign_splits`: seeded, disjoint train / val / meta / test pools of typefaces, a
   family's styles kept together by default, so no test image's typeface (nor its bold or
   italic sibling) was seen in training.

The renders of steps 1-3 are cached once per machine in ``cache_dir``, keyed by
:func:`cache_key`; steps 4-6 take well under a second and are recomputed on load.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .sources import DataError

log = logging.getLogger(__name__)

# EMNIST-balanced's 47 classes: the lowercase letters are those whose shape differs from the capital
EMNIST_BALANCED = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") + tuple("abdefghnqrt")
DEFAULT_PACKAGES = (
    "fonts-aenigma", "fonts-urw-base35", "fonts-dejavu-core", "fonts-liberation", "fonts-texgyre",
    "fonts-adf-accanthis", "fonts-adf-gillius", "fonts-adf-switzera", "fonts-adf-verana",
)
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")  # the Type 1 copies (.t1, .pfb) repeat the .otf faces
SPLIT_NAMES = ("train", "val", "meta", "test")
RENDER_VERSION = 1  # bump whenever the rendering code changes its output


class GlyphError(DataError):
    """A font package is missing or the settings leave nothing to render; the message says why."""


@dataclass(frozen=True)
class GlyphSettings:
    """A ``glyphs`` source block's options."""

    packages: tuple[str, ...] = DEFAULT_PACKAGES
    classes: tuple[str, ...] = EMNIST_BALANCED
    image_size: int = 28
    margin: int = 2  # empty pixels around the glyph's longer side (EMNIST's 2-pixel border)
    oversample: int = 4  # rasterise at oversample * image_size pixels per em, then box-filter down
    exclude_symbol_fonts: bool = True
    min_structure: float | None = 0.2  # see character_structure; None: no such exclusion
    max_case_similarity: float | None = 0.9  # see case_similarity; None: no such exclusion
    min_case_variety: float | None = 0.5  # see case_variety; None: no such exclusion
    split_fractions: tuple[tuple[str, float], ...] = (("train", 0.6), ("val", 0.1), ("meta", 0.1), ("test", 0.2))
    split_seed: int = 0
    split_by: str = "family"  # "family": a family's styles share a pool; "typeface": each face on its own
    workers: int = 2
    cache_dir: str = "results/cache/glyphs"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.packages:
            raise ValueError("glyphs: packages is empty")
        if len(set(self.classes)) != len(self.classes) or any(len(c) != 1 for c in self.classes) \
                or len(self.classes) < 2:
            raise ValueError(f"glyphs: classes must be >= 2 distinct single characters, got {list(self.classes)}")
        if self.image_size < 8 or not 0 <= 2 * self.margin < self.image_size or self.oversample < 1:
            raise ValueError(f"glyphs: image_size {self.image_size}, margin {self.margin} and oversample "
                             f"{self.oversample} leave no room for a glyph")
        names = [s for s, _ in self.split_fractions]
        if set(names) - set(SPLIT_NAMES) or len(set(names)) != len(names) or "train" not in names \
                or "test" not in names:
            raise ValueError(f"glyphs: split_fractions needs train and test, may add val and meta; got {names}")
        fr = np.array([f for _, f in self.split_fractions], dtype=float)
        if (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
            raise ValueError(f"glyphs: split_fractions must be >= 0 and sum to 1, got {dict(self.split_fractions)}")
        if self.split_by not in ("family", "typeface"):
            raise ValueError(f"glyphs: split_by must be family or typeface, got '{self.split_by}'")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GlyphSettings:
        d = dict(params)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"glyphs: unknown option(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        for key in ("packages", "classes"):
            if key in d:
                d[key] = tuple(str(x) for x in d[key])
        if "split_fractions" in d:
            d["split_fractions"] = tuple((str(k), float(v)) for k, v in dict(d["split_fractions"]).items())
        return cls(**d)

    def render_fields(self) -> dict[str, Any]:
        """The settings the cached renders depend on."""
        return {"packages": list(self.packages), "classes": list(self.classes), "image_size": self.image_size,
                "margin": self.margin, "oversample": self.oversample, "render_version": RENDER_VERSION}


@dataclass(frozen=True)
class Typeface:
    """One face of one font file of a package."""

    package: str
    path: str
    index: int = 0  # face index inside a collection (.ttc)

    @property
    def id(self) -> str:
        return f"{self.package}:{Path(self.path).name}#{self.index}"


@dataclass(frozen=True)
class FontInfo:
    """What a typeface's tables say."""

    typeface: Typeface
    family: str
    style: str
    missing: tuple[str, ...]  # classes absent from the character map
    symbol: bool  # declares itself a symbol font (see module docstring)


# ---------------------------------------------------------------------------------- packages


def package_versions(packages: Sequence[str]) -> dict[str, str]:
    """Installed version of each package; packages not installed are left out."""
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n",
                              *packages], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # not a Debian system: nothing is installed
        return {}
    versions = {}
    for line in res.stdout.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status == "installed":
            versions[name] = version
    return versions


def missing_packages(packages: Sequence[str]) -> list[str]:
    versions = package_versions(packages)
    return [p for p in packages if p not in versions]


def package_font_files(package: str) -> list[Path]:
    """The font files ``package`` installed (``dpkg -L``), sorted by path."""
    try:
        res = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        res = None
    if res is None or res.returncode != 0:
        raise GlyphError(f"font package {package} is not installed; run `make data` "
                         f"(or, as root, `apt-get install {package}`)")
    files = sorted({Path(p) for p in res.stdout.splitlines() if p.lower().endswith(FONT_SUFFIXES)})
    return [f for f in files if f.is_file() and not f.is_symlink()]  # a symlink repeats a listed file


def discover_typefaces(packages: Sequence[str]) -> list[Typeface]:
    """Every face of every font file of ``packages``, in package order, then path, then face."""
    from fontTools.ttLib import TTCollection

    faces = []
    for package in packages:
        for path in package_font_files(package):
            n = len(TTCollection(str(path)).fonts) if path.suffix.lower() in (".ttc", ".otc") else 1
            faces += [Typeface(package, str(path), i) for i in range(n)]
    return faces


# ---------------------------------------------------------------------------------- font tables

# trailing style words of a family name: some fonts name each style as its own family
_TRAILING_STYLE = re.compile(r"(\s+(regular|bold|italic|oblique|light|medium|demi|semibold|black|heavy|"
                             r"book|outline|shadow))+$", re.IGNORECASE)


def font_info(tf: Typeface, classes: Sequence[str]) -> FontInfo:
    """Family, style, class coverage and symbol flags of a typeface (fontTools)."""
    from fontTools.ttLib import TTFont

    with TTFont(tf.path, fontNumber=tf.index, lazy=True) as font:
        cmap = font.getBestCmap() or {}  # Unicode subtables only: a symbol cmap never maps "A"
        missing = tuple(c for c in classes if cmap.get(ord(c), ".notdef") == ".notdef")
        family = str(font["name"].getBestFamilyName() or Path(tf.path).stem)
        style = str(font["name"].getBestSubFamilyName() or "")
        os2 = font.get("OS/2")
        symbol = (any(t.platformID == 3 and t.platEncID == 0 for t in font["cmap"].tables)
                  or (os2 is not None and os2.panose.bFamilyType == 5)
                  or (os2 is not None and os2.version >= 1 and bool(os2.ulCodePageRange1 & (1 << 31))))
    family = _TRAILING_STYLE.sub("", family).strip() or family
    return FontInfo(tf, family, style, missing, symbol)


# ---------------------------------------------------------------------------------- rendering


def render_glyph(font: Any, char: str, image_size: int, margin: int) -> np.ndarray | None:
    """One glyph of a Pillow ``FreeTypeFont`` as a uint8 (image_size, image_size) array: cropped
    to its ink, centred, its longer side ``image_size - 2 * margin``; None when it has no ink."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return None
    pad = 2  # antialiasing may spill a pixel past the advertised box
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), char, font=font, fill=255)
    box = img.getbbox()
    if box is None:
        return None
    glyph = img.crop(box)
    gw, gh = glyph.size
    # a square whose side maps to image_size, with the longer side mapping to image_size - 2 * margin
    side = max(-(-max(gw, gh) * image_size // (image_size - 2 * margin)), image_size)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(glyph, ((side - gw) // 2, (side - gh) // 2))
    return np.asarray(canvas.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.uint8)


def render_typeface(tf: Typeface, classes: Sequence[str], image_size: int = 28, margin: int = 2,
                    oversample: int = 4) -> np.ndarray | None:
    """(C, image_size, image_size) uint8 renders of ``classes``; None when a glyph has no ink."""
    from PIL import ImageFont

    # BASIC layout: no raqm/HarfBuzz, whose presence varies between machines
    font = ImageFont.truetype(tf.path, image_size * oversample, index=tf.index,
                              layout_engine=ImageFont.Layout.BASIC)
    out = np.zeros((len(classes), image_size, image_size), dtype=np.uint8)
    for k, ch in enumerate(classes):
        img = render_glyph(font, ch, image_size, margin)
        if img is None:
            return None
        out[k] = img
    return out


def _inspect(args: tuple[Typeface, tuple[str, ...], int, int, int]) -> tuple[FontInfo, np.ndarray | None]:
    tf, classes, image_size, margin, oversample = args
    info = font_info(tf, classes)
    if info.missing:
        return info, None
    return info, render_typeface(tf, classes, image_size, margin, oversample)


def inspect_all(typefaces: Sequence[Typeface], settings: GlyphSettings) -> list[tuple[FontInfo, np.ndarray | None]]:
    """:func:`font_info` of every typeface and the renders of those covering every class, in
    ``settings.workers`` processes behind a progress bar; results in input order."""
    from tqdm import tqdm

    jobs = [(tf, settings.classes, settings.image_size, settings.margin, settings.oversample) for tf in typefaces]
    bar = {"total": len(jobs), "desc": "rendering glyphs", "unit": "font", "disable": not settings.progress}
    if settings.workers <= 1 or len(jobs) < 2:
        return list(tqdm(map(_inspect, jobs), **bar))
    with ProcessPoolExecutor(settings.workers) as pool:
        return list(tqdm(pool.map(_inspect, jobs, chunksize=4), **bar))


# ---------------------------------------------------------------------------------- filters


def duplicates(images: np.ndarray) -> np.ndarray:
    """For each typeface (axis 0 of ``images``), the index of the first typeface with identical
    renders: itself when it is the first."""
    first: dict[bytes, int] = {}
    out = np.empty(len(images), dtype=np.int64)
    for i, img in enumerate(images):
        out[i] = first.setdefault(hashlib.sha256(np.ascontiguousarray(img).tobytes()).digest(), i)
    return out


def _unit_vectors(images: np.ndarray, blur: float) -> np.ndarray:
    """(F, C, D) mean-centred, unit-length pixel vectors, optionally blurred (so that outline and
    filled strokes, or a one-pixel shift, still compare as alike)."""
    x = images.astype(np.float32)
    if blur:
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(0,) * (x.ndim - 2) + (blur, blur))
    x = x.reshape(*x.shape[:2], -1)
    x -= x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def character_structure(images: np.ndarray, reference: np.ndarray | None = None, blur: float = 1.0) -> np.ndarray:
    """How much each typeface's classes resemble one another the way characters do.

    ``images``: (F, C, H, W). For each typeface, the C x C cosine similarities of its class renders
    (blurred, mean-centred); its score is the Pearson correlation of their upper triangle with the
    median pattern over ``reference`` (default: ``images`` itself, robust while most typefaces are
    text faces). A text face, however decorated, has "O" close to "Q" and "0", "E" close to "F",
    "I" far from "W": a high score. A dingbat font's pictures or a pattern font's near-identical
    tiles carry no such structure: a score near 0. The score needs no pixel-level agreement with
    other typefaces, so outline, inline and boxed letters still score as characters."""

    def patterns(imgs: np.ndarray) -> np.ndarray:
        x = _unit_vectors(imgs, blur)
        iu = np.triu_indices(imgs.shape[1], 1)
        return np.einsum("fcd,fkd->fck", x, x)[:, iu[0], iu[1]]

    own = patterns(images)
    ref = np.median(own if reference is None else patterns(reference), axis=0)
    own_c = own - own.mean(axis=1, keepdims=True)
    ref_c = ref - ref.mean()
    denom = np.linalg.norm(own_c, axis=1) * np.linalg.norm(ref_c)
    return (own_c @ ref_c) / np.maximum(denom, 1e-12)


def case_pairs(classes: Sequence[str]) -> list[tuple[int, int]]:
    """(lowercase index, capital index) of every letter present in both cases."""
    pos = {c: i for i, c in enumerate(classes)}
    return [(i, pos[c.upper()]) for i, c in enumerate(classes) if c.islower() and c.upper() in pos]


def case_similarity(images: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Per typeface, the median over :func:`case_pairs` of the cosine similarity (mean-centred,
    unblurred: a blur pulls every pair together) of its lowercase and capital renders; near 1 when
    its lowercase letters are drawn as capitals (titling, small-caps and caps-only fonts) or the
    reverse, or when a frame dominates every glyph; 0 when the classes hold no case pair."""
    pairs = case_pairs(classes)
    if not pairs:
        return np.zeros(len(images))
    x = _unit_vectors(images, 0.0)
    low, up = zip(*pairs)
    return np.median(np.einsum("fcd,fcd->fc", x[:, list(low)], x[:, list(up)]), axis=1)


def case_variety(images: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Per typeface, how varied its lowercase classes are relative to their capitals:
    (1 - median pairwise similarity of the lowercase renders of :func:`case_pairs`) /
    (1 - the same over their capitals), mean-centred and unblurred. About 1 for a text face (its
    "a", "g" and "t" differ as much as its "A", "G" and "T" do); near 0 when the lowercase slots
    hold one repeated picture; 1 when fewer than two case pairs exist."""
    pairs = case_pairs(classes)
    if len(pairs) < 2:
        return np.ones(len(images))
    x = _unit_vectors(images, 0.0)
    iu = np.triu_indices(len(pairs), 1)

    def median_similarity(idx: list[int]) -> np.ndarray:
        sub = x[:, idx]
        return np.median(np.einsum("fcd,fkd->fck", sub, sub)[:, iu[0], iu[1]], axis=1)

    low, up = (list(t) for t in zip(*pairs))
    return (1.0 - median_similarity(low)) / np.maximum(1.0 - median_similarity(up), 1e-6)


def exclusion_scores(images: np.ndarray, classes: Sequence[str], cache: Path | None = None) -> dict[str, np.ndarray]:
    """:func:`character_structure`, :func:`case_similarity` and :func:`case_variety` of every typeface. With ``cache``
    (a ``.npz`` beside the renders) they are read from it when it was computed from these very
    renders (same array checksum), else computed and saved: every job that loads the source
    (train, infer, figures) would otherwise spend about a second recomputing them."""
    from .io import atomic_path

    key = array_checksum(images)
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["checksum"]) == key:
                    return {k: z[k] for k in ("structure", "case_similarity", "case_variety")}
        except (OSError, ValueError, KeyError):
            log.warning("glyphs: score cache %s is unreadable or from an older version; recomputing it", cache)
    scores = {"structure": character_structure(images), "case_similarity": case_similarity(images, classes),
              "case_variety": case_variety(images, classes)}
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, checksum=np.array(key), **scores)
    return scores


def exclusions(images: np.ndarray, infos: Sequence[FontInfo], settings: GlyphSettings,
               scores: Mapping[str, np.ndarray] | None = None) -> tuple[list[str], dict]:
    """Why each typeface is excluded ("" when kept): ``symbol``, ``not_characters``, ``one_case``
    or ``pictures`` (first that applies, in this order), and the scores behind it (``scores``:
    :func:`exclusion_scores` of ``images``, computed when not given)."""
    scores = scores if scores is not None else exclusion_scores(images, settings.classes)
    structure, case, variety = scores["structure"], scores["case_similarity"], scores["case_variety"]
    reasons = []
    for info, s, c, v in zip(infos, structure, case, variety):
        if settings.exclude_symbol_fonts and info.symbol:
            reasons.append("symbol")
        elif settings.min_structure is not None and s < settings.min_structure:
            reasons.append("not_characters")
        elif settings.max_case_similarity is not None and c >= settings.max_case_similarity:
            reasons.append("one_case")
        elif settings.min_case_variety is not None and v < settings.min_case_variety:
            reasons.append("pictures")
        else:
            reasons.append("")
    return reasons, {"structure": structure, "case_similarity": case, "case_variety": variety}


# ---------------------------------------------------------------------------------- splits


def assign_splits(groups: Sequence[str], fractions: Sequence[tuple[str, float]], seed: int) -> np.ndarray:
    """The split of each item, items of one group together: the groups, sorted then shuffled by
    ``seed``, are laid end to end by their sizes and cut at the cumulative ``fractions``; a group
    goes to the split its midpoint falls in. Every split with a positive fraction gets at least
    one group, else :class:`GlyphError`."""
    groups = np.asarray(groups, dtype=object)
    names, sizes = np.unique(groups.astype(str), return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    mids = (np.cumsum(sizes[order]) - sizes[order] / 2) / len(groups)
    edges = np.cumsum([f for _, f in fractions])
    which = np.minimum(np.searchsorted(edges, mids, side="right"), len(fractions) - 1)
    split_of_group = {names[g]: fractions[w][0] for g, w in zip(order, which)}
    out = np.array([split_of_group[str(g)] for g in groups], dtype=object)
    empty = [s for s, f in fractions if f > 0 and not (out == s).any()]
    if empty:
        raise GlyphError(f"glyphs: split(s) {empty} get no typeface from {len(names)} groups; "
                         "raise their fractions or use more font packages")
    return out


# ---------------------------------------------------------------------------------- the set


@dataclass(frozen=True)
class GlyphSet:
    """The kept typefaces' renders and where each goes."""

    classes: tuple[str, ...]
    images: np.ndarray  # (F, C, H, W) uint8, kept typefaces in discovery order
    infos: tuple[FontInfo, ...]  # one per kept typeface
    splits: np.ndarray  # (F,) split name of each kept typeface
    counts: dict[str, Any]  # survivors of each filter and typefaces / families per split
    provenance: dict[str, str]  # JSON strings, saved in the samples parquet's metadata

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def array_checksum(images: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes."""
    h = hashlib.sha256(f"{images.shape}{images.dtype}".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def _renderer_versions() -> dict[str, str]:
    import fontTools
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "freetype": str(features.version("freetype2")),
            "fonttools": fontTools.version}


def cache_key(settings: GlyphSettings, versions: Mapping[str, str]) -> str:
    """Hash of what the renders depend on: render settings, package versions, renderer versions."""
    blob = json.dumps({"settings": settings.render_fields(), "packages": dict(sorted(versions.items())),
                       "renderer": _renderer_versions()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so concurrent jobs render once and the others read the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def rendered(settings: GlyphSettings) -> tuple[np.ndarray, list[FontInfo], list[bool], dict[str, str], Path]:
    """(renders of the typefaces covering every class, every typeface's info, whether each one
    rendered, package versions, cache file): from the cache when present, else rendered and cached."""
    from .io import atomic_path

    missing = missing_packages(settings.packages)
    if missing:
        raise GlyphError(f"font package(s) {missing} not installed; run `make data` "
                         f"(or, as root, `apt-get install {' '.join(missing)}`)")
    versions = package_versions(settings.packages)
    path = Path(settings.cache_dir) / f"glyphs-{cache_key(settings, versions)}.npz"
    with _locked(path.with_suffix(".lock")):
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                images, meta = z["images"], json.loads(str(z["meta"]))
            infos = [FontInfo(Typeface(*m["typeface"]), m["family"], m["style"], tuple(m["missing"]), m["symbol"])
                     for m in meta["infos"]]
            log.info("glyphs: %d typefaces' renders read from %s", len(images), path)
            return images, infos, meta["rendered"], versions, path
        t0 = time.perf_counter()
        results = inspect_all(discover_typefaces(settings.packages), settings)
        ok = [img is not None for _, img in results]
        shape = (0, len(settings.classes), settings.image_size, settings.image_size)
        images = np.stack([img for _, img in results if img is not None]) if any(ok) else np.zeros(shape, np.uint8)
        infos = [info for info, _ in results]
        meta = {"infos": [{"typeface": [i.typeface.package, i.typeface.path, i.typeface.index],
                           "family": i.family, "style": i.style, "missing": list(i.missing), "symbol": i.symbol}
                          for i in infos], "rendered": ok}
        # a file object: np.savez would append ".npz" to the temporary name
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=images, meta=np.array(json.dumps(meta)))
        log.info("glyphs: rendered %d of %d typefaces in %.1f s (%d workers) into %s",
                 len(images), len(infos), time.perf_counter() - t0, settings.workers, path)
        return images, infos, ok, versions, path


def build_glyphs(settings: GlyphSettings) -> GlyphSet:
    """Render (or read from the cache), filter and split; see the module docstring."""
    images, all_infos, ok, versions, path = rendered(settings)
    infos = [info for info, r in zip(all_infos, ok) if r]
    counts: dict[str, Any] = {
        "typefaces": len(all_infos),
        "cover_classes": sum(not i.missing for i in all_infos),
        "rendered": len(infos),  # covering every class, with ink in every glyph
    }
    first = duplicates(images)
    distinct = np.flatnonzero(first == np.arange(len(first)))
    counts["distinct"] = len(distinct)
    images, infos = images[distinct], [infos[i] for i in distinct]
    if not len(images):
        raise GlyphError(f"glyphs: no typeface of {list(settings.packages)} covers the classes "
                         f"{''.join(settings.classes)}")
    reasons, scores = exclusions(images, infos, settings, exclusion_scores(
        images, settings.classes, path.with_name(f"scores-{path.stem}.npz")))
    for why in ("symbol", "not_characters", "one_case", "pictures"):
        counts[f"excluded_{why}"] = reasons.count(why)
    excluded = [{"typeface": i.typeface.id, "reason": r, "structure": round(float(s), 3),
                 "case_similarity": round(float(c), 3), "case_variety": round(float(v), 3)}
                for i, r, s, c, v in zip(infos, reasons, scores["structure"], scores["case_similarity"],
                                         scores["case_variety"]) if r]
    keep = [k for k, r in enumerate(reasons) if not r]
    images, infos = images[keep], [infos[k] for k in keep]
    counts["kept"] = len(infos)
    groups = [i.family if settings.split_by == "family" else i.typeface.id for i in infos]
    splits = assign_splits(groups, settings.split_fractions, settings.split_seed)
    counts["splits"] = {s: {"typefaces": int((splits == s).sum()),
                            "families": len({g for g, x in zip(groups, splits) if x == s})}
                        for s, f in settings.split_fractions if f > 0}
    checksum = array_checksum(images)
    provenance = {
        "glyphs_sha256": checksum,
        "glyphs_packages": json.dumps(versions, sort_keys=True),
        "glyphs_renderer": json.dumps(_renderer_versions(), sort_keys=True),
        "glyphs_settings": json.dumps({**settings.render_fields(),
                                       "exclude_symbol_fonts": settings.exclude_symbol_fonts,
                                       "min_structure": settings.min_structure,
                                       "max_case_similarity": settings.max_case_similarity,
                                       "min_case_variety": settings.min_case_variety,
                                       "split_fractions": dict(settings.split_fractions),
                                       "split_seed": settings.split_seed, "split_by": settings.split_by}),
        "glyphs_counts": json.dumps(counts),
        "glyphs_fonts": json.dumps([[i.typeface.id, i.family, i.style, str(s)] for i, s in zip(infos, splits)]),
        "glyphs_excluded": json.dumps(excluded),
    }
    log.info("glyphs: %s typefaces -> %s cover the %d classes -> %s render -> %s distinct -> %s kept "
             "(excluded: %s symbol, %s not characters, %s one case, %s pictures); array sha256 %s; cache %s",
             counts["typefaces"], counts["cover_classes"], len(settings.classes), counts["rendered"],
             counts["distinct"], counts["kept"], counts["excluded_symbol"], counts["excluded_not_characters"],
             counts["excluded_one_case"], counts["excluded_pictures"], checksum[:16], path)
    log.info("glyphs: typefaces (families) per split: %s",
             ", ".join(f"{s} {c['typefaces']} ({c['families']})" for s, c in counts["splits"].items()))
    return GlyphSet(tuple(settings.classes), images, tuple(infos), splits, counts, provenance)


def glyph_source_data(gs: GlyphSet) -> dict[str, Any]:
    """The keyword arguments of a ``SourceData``: per split, its typefaces' images, typeface-major
    (row ``t * C + c`` is class ``c`` of the split's ``t``-th typeface) with their labels."""
    C = len(gs.classes)
    labels, images = {}, {}
    for split in gs.counts["splits"]:
        idx = gs.split_indices(split)
        images[split] = gs.images[idx].reshape(-1, *gs.images.shape[2:])
        labels[split] = np.tile(np.arange(C, dtype=np.int64), len(idx))
    return {"name": "glyphs", "class_names": gs.classes, "labels": labels, "images": images,
            "provenance": gs.provenance}
