"""`tinydiffusion course`: the one command that reproduces the course (checkpoints, pictures, experiments) as course.html."""
from __future__ import annotations

from pathlib import Path


def add_course(sub):
    p = sub.add_parser("course", help="reproduce the lessons end to end into one static HTML report")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="training budget of the lesson's recipe in minutes (default 10: measured to pass the three "
                        "checkpoints on a 2-core CPU, where 2 failed)")
    p.add_argument("--lesson-minutes", type=float,
                   help="budget per model of the comparison experiments (schedules, T, VAE); default minutes / 10")
    p.add_argument("--out", type=Path, default=Path("reports/course"), help="report folder (default reports/course)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the trained run, e.g. --set model.channels=16 (repeatable)")
    p.set_defaults(func=run_course_command)


def run_course_command(args):
    from ..errors import UserError
    from ..experiments.course import run_course

    if not args.minutes > 0:
        raise UserError(f"--minutes must be positive, got {args.minutes}.")
    if args.lesson_minutes is not None and not args.lesson_minutes > 0:
        raise UserError(f"--lesson-minutes must be positive, got {args.lesson_minutes}.")
    out = run_course(args.out, args.minutes, seed=args.seed, device=args.device, lesson_minutes=args.lesson_minutes,
                     overrides=tuple(args.overrides))
    print(f"wrote {out / 'course.html'}; open it in a browser, or `tinydiffusion lab --course {out}`")
