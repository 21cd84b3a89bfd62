"""Export a training checkpoint as the model bundle the live node loads.

The bundle (DESIGN.md "Model bundle"; format in cns_ros/training/bundle_format.py) is a folder:
model.yaml (architectures, voxel size, input features, format version), model.safetensors
(3d.* and 2d.* weights, sparse kernels in the backend-neutral layout, so a bundle trained on
spconv loads on torchsparse and back), vocabulary.yaml (class names, synonyms, colors) and
text_embeddings.safetensors (C x D). Nothing is unpickled: the checkpoint is read with
torch.load(weights_only=True), the bundle is safetensors + YAML. The folder is written under a
temporary name and renamed when complete; an existing non-empty --out is replaced only with
--overwrite. The SAM-projection heads are training-only and not exported.

examples:
  python -m offline_training.export --run runs/cns --out bundles/cns   # the run's newest
  python -m offline_training.export --checkpoint runs/cns/checkpoints/step_00004000.pt \\
      --out bundles/cns --no-2d --overwrite

exit status: 0 done, 2 bad arguments or an unreadable checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='export', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--checkpoint', type=Path, help='a training checkpoint '
                        '(OUT/checkpoints/step_XXXXXXXX.pt of offline_training.train)')
    source.add_argument('--run', type=Path, help='a training run folder (the --out of '
                        'offline_training.train): export its newest checkpoint')
    parser.add_argument('--out', required=True, type=Path, help='bundle folder to create')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing non-empty --out once the new bundle is done')
    parser.add_argument('--no-2d', dest='include_2d', action='store_false',
                        help='leave the 2D network out (the live node runs the 3D network '
                        'only; the 2D one is for evaluation)')
    parser.add_argument('--clip-model', help='open_clip model name of the text embeddings, '
                        'recorded for run-time vocabulary changes (default: the training '
                        "config's text.clip_model when CLIP computed them; none for random "
                        'or file embeddings)')
    return parser


def resolve_checkpoint(checkpoint: Path | None, run: Path | None) -> Path:
    """The checkpoint file of ``--checkpoint`` or the newest one of ``--run``.

    Raises:
        FileNotFoundError: No such file / no checkpoint in the run folder.
    """
    from cns_ros.training.checkpoint import CHECKPOINT_DIR, latest_checkpoint

    if run is not None:
        found = latest_checkpoint(run)
        if found is None:
            raise FileNotFoundError(f'--run: no checkpoint in {run / CHECKPOINT_DIR} (train '
                                    f'with offline_training.train --out {run})')
        return found
    if not checkpoint.is_file():
        raise FileNotFoundError(f'--checkpoint: {checkpoint} not found')
    return checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; 0 on success, exits with status 2 on bad input."""
    import pickle

    from cns_ros.training.bundle_checkpoint import bundle_from_checkpoint
    from cns_ros.training.bundle_format import load_bundle
    from cns_ros.training.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        checkpoint = resolve_checkpoint(args.checkpoint, args.run)
        out = bundle_from_checkpoint(checkpoint, args.out, overwrite=args.overwrite,
                                     include_2d=args.include_2d, clip_model=args.clip_model)
        bundle = load_bundle(out)  # what the node will read: validate before reporting
    except (FileNotFoundError, FileExistsError, ConfigError, ValueError, RuntimeError,
            pickle.UnpicklingError) as exc:  # RuntimeError: torch cannot read the file
        parser.error(str(exc))
    two_d = f'2D {bundle.image_model}' if bundle.has_image_net else 'no 2D network'
    print(f'exported {checkpoint} -> {out}: 3D {bundle.model_name} (voxel '
          f'{bundle.voxel_size} m, input {", ".join(bundle.input_features)}), {two_d}, '
          f'{bundle.vocabulary.num_classes} classes x D = {bundle.embedding_dim}, '
          f'text from {bundle.metadata.get("text_source")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
