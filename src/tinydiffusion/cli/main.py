"""The `tinydiffusion` command. It only maps flags onto configs and calls the library; errors a user can fix
are printed as one sentence with exit code 2. One module per command, each with add_X(sub) and run_X(args)."""
from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from .bench import add_bench
from .course import add_course
from .data import add_data
from .distill import add_distill
from .eval import add_eval
from .experiment import add_experiment
from .lab import add_lab
from .lists import add_lists
from .sample import add_sample
from .train import add_train
from .viz import add_viz


# Each entry adds one subcommand; later capabilities put theirs in their own module and list it here.
COMMANDS = [add_train, add_sample, add_lists, add_experiment, add_viz, add_data, add_eval, add_bench, add_lab,
            add_course, add_distill]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinydiffusion", description="Diffusion models from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


DISTRIBUTED = ("train", "sample", "eval", "distill")  # the commands that run under torchrun (distributed.py)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --nproc N` relaunches itself under torchrun with these
    from .. import distributed
    try:
        if distributed.launched():
            if args.command not in DISTRIBUTED:
                raise UserError(f"`{args.command}` runs on one process; only {', '.join(DISTRIBUTED)} run under "
                                "torchrun.")
            from ..device import resolve_device
            distributed.init(resolve_device(getattr(args, "device", "cpu")))
        with distributed.main_only():  # one rank prints
            args.func(args)
    except UserError as e:
        if distributed.is_main() or not distributed.world_size() > 1:  # every rank finds the same; one says it
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; a training run continues with `tinydiffusion train --out DIR --resume`.",
              file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
