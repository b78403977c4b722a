"""Pack the training and validation films as lung frames, for training on another machine.

    python -m ml.pack --data ../shared/data/cxr --split-file ml/artifacts/dev_split.json \
        --architecture sepres-wide --out runs/pack/cxr160.npz

An accelerator machine has neither the data pool (its licences forbid copying
it around, and it is too large to send) nor a TFLite runtime for the lung
segmenter. The pack holds, for every train/val film of the split, the first
half of preprocessing (``ml.preprocess.lung_frame``: the lung crop resized to
the model input, 8-bit, before equalisation) and the lung mask; the second
half (``finish_frame``) rebuilds exactly the model input ``preprocess`` gives,
because histogram equalisation quantises to 8 bits anyway. Test films are
left out: nothing on the other machine may see them.

It also records which films form each training group: ``main`` (the split's
train/val) and ``loso-<source>`` (train/val without that source), so the
other machine trains exactly the runs ``ml.train --leave-out-source`` would.
The pack is a derived copy of licensed images: keep it under runs/ (ignored)
and never commit it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.labels import CLASS_NAMES
from ml.preprocess import PreprocessConfig, finish_frame, lung_frame

PACK_FORMAT = 1


def frame_to_uint8(frame: np.ndarray) -> np.ndarray:
    """The same rounding as ``equalize_histogram``'s, so equalising the 8-bit frame changes nothing."""
    return np.clip(np.asarray(frame, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Pack:
    frames: np.ndarray  # (N, S, S) uint8, before equalisation
    masks: np.ndarray  # (N, S, S) bool
    labels: np.ndarray  # (N,) class indices into CLASS_NAMES
    keys: list[str]
    sources: list[str]
    groups: dict[str, dict[str, list[int]]]  # group -> {"train": [...], "val": [...]} indices
    config: PreprocessConfig
    info: dict

    def model_inputs(self, indices) -> np.ndarray:
        """Un-augmented model inputs (n, S, S, 1), equal to ``preprocess`` on the original films."""
        return np.stack([self.model_input(i) for i in indices]) if len(indices) else np.empty(
            (0, self.config.input_size, self.config.input_size, 1), np.float32)

    def model_input(self, index: int, frame: np.ndarray | None = None) -> np.ndarray:
        pixels = self.frames[index].astype(np.float32) / 255.0 if frame is None else frame
        return finish_frame(pixels, self.masks[index], self.config)


def build_pack(*, samples, split, config: PreprocessConfig, loso_sources: list[str], decode) -> Pack:
    """Frames for every train/val sample of ``split``; ``decode(sample)`` gives its film."""
    from tqdm import tqdm

    from ml.datasets import leave_one_source_out
    from ml.train import label_array

    if config.equalize != "histogram" or not config.mask_outside_lungs:
        raise ValueError("packing is exact only for histogram-equalised, lung-masked preprocessing")
    train, val = split.part(samples, "train"), split.part(samples, "val")
    members = train + val
    position = {sample.key: index for index, sample in enumerate(members)}
    size = config.input_size
    frames = np.empty((len(members), size, size), np.uint8)
    masks = np.empty((len(members), size, size), bool)
    for index, sample in enumerate(tqdm(members, desc="pack", file=sys.stderr)):
        frame, mask, _found = lung_frame(decode(sample), config)
        frames[index], masks[index] = frame_to_uint8(frame), mask
    groups = {"main": {"train": [position[s.key] for s in train], "val": [position[s.key] for s in val]}}
    for source in loso_sources:
        loso = leave_one_source_out(samples=samples, split=split, source=source)
        groups[f"loso-{source}"] = {
            "train": [position[s.key] for s in loso.train], "val": [position[s.key] for s in loso.val],
        }
    return Pack(
        frames=frames, masks=masks,
        labels=label_array(members),
        keys=[s.key for s in members], sources=[s.source for s in members],
        groups=groups, config=config, info={"split_seed": split.seed},
    )


def save_pack(pack: Pack, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": PACK_FORMAT, "keys": pack.keys, "sources": pack.sources, "groups": pack.groups,
        "config": pack.config.to_dict(), "class_names": list(CLASS_NAMES), "info": pack.info,
    }
    np.savez_compressed(
        path, frames=pack.frames, masks=np.packbits(pack.masks, axis=-1), labels=pack.labels,
        header=np.frombuffer(json.dumps(header).encode(), np.uint8),
    )
    return path


def load_pack(path: Path | str) -> Pack:
    with np.load(path) as data:
        header = json.loads(data["header"].tobytes().decode())
        if header.get("format") != PACK_FORMAT:
            raise ValueError(f"{path}: pack format {header.get('format')!r}, expected {PACK_FORMAT}")
        if header["class_names"] != list(CLASS_NAMES):
            raise ValueError(f"{path}: classes {header['class_names']} differ from {list(CLASS_NAMES)}")
        frames = data["frames"]
        masks = np.unpackbits(data["masks"], axis=-1, count=frames.shape[-1]).astype(bool)
        labels = data["labels"]
    return Pack(
        frames=frames, masks=masks, labels=labels, keys=header["keys"], sources=header["sources"],
        groups=header["groups"], config=PreprocessConfig.from_dict(header["config"]), info=header["info"],
    )


def main(argv: list[str] | None = None) -> int:
    from ml.datasets import default_data_dir, load_dataset, load_split, sources
    from ml.train import decode_film, default_preprocess

    parser = argparse.ArgumentParser(prog="python -m ml.pack", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--split-file", type=Path, required=True)
    parser.add_argument("--architecture", default="sepres-wide")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    samples = load_dataset(args.data, args.manifest)
    if not samples:
        parser.error(f"no labelled images under {args.data}")
    split = load_split(args.split_file)
    config = default_preprocess(args.architecture, input_size=args.input_size)
    pack = build_pack(
        samples=samples, split=split, config=config, loso_sources=sources(samples),
        decode=decode_film,
    )
    pack.info["split_file_sha256"] = hashlib.sha256(args.split_file.read_bytes()).hexdigest()
    path = save_pack(pack, args.out)
    print(json.dumps({
        "out": str(path), "bytes": path.stat().st_size, "films": len(pack.keys),
        "groups": {name: {part: len(idx) for part, idx in parts.items()} for name, parts in pack.groups.items()},
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
