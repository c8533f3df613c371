"""Train RecSysLLM: `python -m recsys_jax.train [configs/X.yaml] [section.key=value ...]`.

With no arguments it trains the default recipe (configs/beauty.yaml: the users' item
sequences under a next-item loss, a 2-layer d=64 GLM, about 3 minutes on a 2-core CPU) on the
embedded Amazon Beauty data, writing runs/default/, and ends by printing the saved model's
validation HR@10 / NDCG@10 beside most-popular's. Re-running with the same run_dir resumes
from the latest checkpoint there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from recsys_jax import configlib
from recsys_jax.cli import report_error
from recsys_jax.config import Config, load_config
from recsys_jax.data.schema import DataError
from recsys_jax.huge_pages import restart_with_huge_pages
from recsys_jax.training import TrainingDiverged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_jax.train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="config keys (override with section.key=value; model.vocab_size is set from "
        "the tokenizer and masking.max_length from data.seq_len):\n" + configlib.help_text(Config),
    )
    parser.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG_OR_OVERRIDE",
        help="an optional YAML config file, then section.key=value overrides",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = None
    overrides = list(args.args)
    if overrides and "=" not in overrides[0]:
        path = overrides.pop(0)
    try:
        cfg = load_config(path, overrides)
        from recsys_jax.training.report import final_report
        from recsys_jax.training.trainer import Trainer  # heavy imports after the config is OK

        trainer = Trainer(cfg)
        summary = trainer.run()
    except (configlib.ConfigError, DataError, TrainingDiverged) as e:
        return report_error(e)
    stopped_by_signal = summary.get("stopped_by_signal")
    if trainer.is_main and not stopped_by_signal:  # a stopped run is left to finish, not graded
        print(
            final_report(
                cfg.train.run_dir, summary, trainer.prepared, cfg.train.valid_ranking_users
            )
        )
    print(json.dumps(summary))  # last, one line: what scripts read
    return 130 if stopped_by_signal == "SIGINT" else 0  # 130: the shell's code for Ctrl-C


if __name__ == "__main__":
    restart_with_huge_pages()  # where it helps, once: recsys_jax/huge_pages.py
    sys.exit(main())
