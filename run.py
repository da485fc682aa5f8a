"""AutoPEFT entry point: compose ``conf/run.yaml`` with Hydra and run ``mode``.

Examples::

    python run.py                                   # the embedded offline default
    python run.py mode=params backbone=bert_base_arch peft=sa peft.sa_size=48
    python run.py -m task=rotten_tomatoes,snli_binary seed=0,1,2
"""

from __future__ import annotations

import os

# Tokenizers' own thread pool fights the DataLoader's workers; one kind of parallelism is enough.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra
from omegaconf import DictConfig

from autopeft.cli import dispatch
from autopeft.runtime import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> None:
    """Dispatch to the requested mode (see ``autopeft.cli.MODES``)."""
    dispatch(cfg)


if __name__ == "__main__":
    import sys

    from autopeft.errors import ConfigError
    from autopeft.overrides_check import check_overrides
    from autopeft.preflight import check_output_location

    try:  # Hydra creates the run directory before any mode runs: check it can first
        check_output_location(sys.argv[1:])
        # Hydra's own report of a misspelt group option or key is many lines without a suggestion
        # (and advises '+key=' for a typo): check the overrides first, in one line.
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    main()
