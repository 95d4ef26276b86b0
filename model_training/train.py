"""The training command: parse the options, then train (torch is imported only after parsing, so
``--help`` and option errors answer at once).

    python -m model_training.train --data DIR --category NAME|all --out RUN_DIR [--backbone ...]
        [--image-size N] [--epochs-t1 N] [--epochs-t2 M] [--batch-size B] [--resume] ...
    torchrun --nproc-per-node G -m model_training.train ...      # DDP

``--help`` lists every option with its default (:mod:`model_training.config`); the training itself is
:mod:`model_training.trainer`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from model_training.config import parse_config


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(argv)
    from model_training.backbone import BackboneError
    from model_training.optim import OptionError
    from model_training.trainer import train

    try:
        return train(cfg)
    except BackboneError as error:
        print(f"error: backbone {cfg.backbone!r}: {error}", file=sys.stderr, flush=True)
        return 2
    except OptionError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
