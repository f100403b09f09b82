"""Where data and splits come from when the user names none: the embedded phantom.

Without ``--data`` every command uses the synthetic lumbar phantom, generated once
into the user cache directory (atomically, so an interrupted generation is never
mistaken for a finished one). Without ``--split`` the phantom uses the split frozen
under ``results/splits/``; other data gets a split made once and then frozen in the
cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lumbar_bench.core.stage_cache import build_once
from lumbar_bench.data.phantom.config import GENERATOR_VERSION, PhantomConfig
from lumbar_bench.data.rsna import RSNAData
from lumbar_bench.data.splits import Split, check_covers, load_split, make_split, save_split

log = logging.getLogger(__name__)

#: The embedded default dataset: studies, image size in pixels, seed.
DEFAULT_PHANTOM = {"studies": 200, "size": 128, "seed": 0}
DEFAULT_FOLDS = 5
REPO_SPLITS = Path(__file__).resolve().parents[2] / "results" / "splits"


def phantom_name() -> str:
    """Folder and split name of the default phantom, versioned with its generator."""
    p = DEFAULT_PHANTOM
    return f"phantom-v{GENERATOR_VERSION}-n{p['studies']}-px{p['size']}-s{p['seed']}"


def ensure_phantom(cache_dir: Path, progress: bool = True) -> Path:
    """Path of the default phantom, generating it once (atomically, under a file lock) if needed."""
    target = cache_dir / phantom_name()

    def build(tmp: Path) -> None:
        # lazy: only a missing phantom needs the generator (scipy, SimpleITK); run.plan imports this module
        from lumbar_bench.data.phantom.synth import synthesize

        log.info("generating the default phantom into %s (once)", target)
        synthesize(tmp, PhantomConfig(**DEFAULT_PHANTOM), progress=progress, workers=0)  # one per CPU

    build_once(target, "phantom.json", build)
    return target


def load_data(data_dir: Path | None, cache_dir: Path, progress: bool = True, part: str = "train") -> RSNAData:
    """Load ``data_dir`` (RSNA layout), or the default phantom when it is None."""
    root = Path(data_dir) if data_dir is not None else ensure_phantom(cache_dir, progress)
    return RSNAData.load(root, part=part, cache_dir=cache_dir / "series")


def describe(data: RSNAData) -> str:
    """``phantom`` or ``rsna``: what kind of data a run used, with no patient detail."""
    return "phantom" if (data.root / "phantom.json").exists() else "rsna"


def resolve_split(data: RSNAData, split_path: Path | None, cache_dir: Path) -> tuple[Split, str]:
    """The split for ``data`` and where it came from; refuses tampered or foreign splits."""
    if split_path is None:
        split_path = default_split_path(data, cache_dir)
        if not split_path.exists():
            log.info("making and freezing a %d-fold split at %s", DEFAULT_FOLDS, split_path)
            save_split(make_split(data.labels, DEFAULT_FOLDS, 0, data.data_digest()), split_path)
    split = load_split(split_path)
    check_covers(split, list(data.labels.index), split_path)
    return split, str(split_path)


def default_split_path(data: RSNAData, cache_dir: Path) -> Path:
    """The shipped split for the default phantom, else one frozen in the cache per data digest."""
    if describe(data) == "phantom" and data.root.name == phantom_name():
        shipped = REPO_SPLITS / f"{phantom_name()}.json"
        if shipped.exists():
            return shipped
    return cache_dir / "splits" / f"{data.data_digest()[:16]}-k{DEFAULT_FOLDS}-s0.json"
