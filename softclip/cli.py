"""The ``softclip`` command line. The only module that reads argv.

Every subcommand is a function registered in ``COMMANDS`` together with its argument set-up, so the parser,
the help text and the tests are driven by one table. ``main(argv)`` returns the exit code and is callable from
pytest: 0 success, 1 a runtime failure (bad data, diverged run, disk full), 2 a usage or configuration error
(or a run folder owned by another trainer or holding no run), 130 Ctrl-C, 128 + N a stop signal N during training
(143 for SIGTERM: checkpointed, like Ctrl-C). Known errors print one line; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from softclip.config import ConfigError, check_no_repeats, load_config

DEFAULT_CONFIG = "ablations/base.yaml"
LAUNCHER_HELP = (
    "inprocess | processes | slurm (a job array: sweep workers, or chunks of ablation runs) | submitit-local"
)


@dataclass(frozen=True)
class Command:
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand ``name``; raises on duplicates."""

    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise KeyError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(help, add_args, fn)
        return fn

    return deco


def _config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument("config", help="YAML config, e.g. ablations/base.yaml")
    p.add_argument("--profile", default=None, help="profile inside the config: smoke, quick, long, rehearsal or paper")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. loss.beta=0.5")


# ------------------------------------------------------------------------------------------- commands


def _add_config_show(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")


@command("config", "validate a config and print it fully resolved", _add_config_show)
def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = load_config(args.config, args.overrides, profile=args.profile)
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
    else:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["synth", "vinvl", "paper"],
                   help="synth: generate the SynthScenes benchmark; vinvl: add VinVL sidecars (.roi.npy float16 "
                        "[K, 2054], .tags.json) to existing img2dataset shards, each shard rewritten atomically; "
                        "paper: paper-shaped rehearsal data (224-px shards with K<=50 x 2054 sidecars, the paper "
                        "suite's sets in their real layouts; --out DIR, then `source DIR/env.sh`)")  # fmt: skip
    p.add_argument("--n-train", type=int, default=None, help="paper: training pairs (default 64)")
    p.add_argument("--out", default=None, help="synth: output folder (required); vinvl: folder for the rewritten "
                   "shards (default: replace each shard in place, atomically)")  # fmt: skip
    p.add_argument("--shards", default=None, help="vinvl: shard files, e.g. 'cc3m/{00000..00331}.tar' or a glob")
    p.add_argument("--features-tsv", default=None, help="vinvl: VinVL feature TSV (id, K, base64 float32 [K, D])")
    p.add_argument("--labels-tsv", default=None, help="vinvl: VinVL label TSV (id, JSON objects with class, rect)")
    p.add_argument("--id-field", default="key", help="vinvl: how a sample finds its VinVL rows: key (the member "
                   "key) or a field of the sample's .json, e.g. image_id (default key)")  # fmt: skip
    p.add_argument("--preset", default=None, help="synth: a SynthScenes preset (smoke, quick, long, paper) instead of "
                   "the config's data.synth")  # fmt: skip
    p.add_argument("--config", default=None, help=f"config whose data.synth is used (default {DEFAULT_CONFIG})")
    p.add_argument("--seed", type=int, default=None, help="generator seed (default: the config's seed)")
    p.add_argument("--workers", type=int, default=1, help="processes used to draw and encode images")
    p.add_argument("--force", action="store_true", help="regenerate even if the folder is up to date")
    _config_args(p, config_required=False)


@command("data", "generate the built-in synthetic benchmark in the real formats", _add_data)
def cmd_data(args: argparse.Namespace) -> int:
    if args.action == "vinvl":
        return _data_vinvl(args)
    if args.action == "paper":
        return _data_paper(args)
    from softclip.data.synth import generate
    from softclip.resources import resolve

    if args.out is None:
        raise ConfigError("softclip data synth: --out is required")
    cfg = load_config(resolve(args.config or DEFAULT_CONFIG), args.overrides, profile=args.profile)
    seed = cfg.seed if args.seed is None else args.seed
    if args.preset:
        from softclip.data.synth import SynthConfig

        spec = SynthConfig.preset(args.preset)
    else:
        spec = cfg.data.synth
    card = generate(args.out, spec, seed=seed, workers=args.workers, force=args.force)
    sizes = {name: info.get("samples", info.get("images")) for name, info in card.get("sets", {}).items()}
    shown = ", ".join(f"{name}={n}" for name, n in sizes.items() if n is not None)
    print(f"SynthScenes in {args.out} (seed {seed}, {card.get('object_types')} object types): {shown}")
    return 0


def _data_paper(args: argparse.Namespace) -> int:
    from softclip.data.synth.paper_shapes import PaperShapes, write_paper_shapes

    if args.out is None:
        raise ConfigError("softclip data paper: --out is required")
    spec = PaperShapes(seed=args.seed or 0, **({} if args.n_train is None else {"n_train": args.n_train}))
    card = write_paper_shapes(args.out, spec)
    print(f"paper-shaped rehearsal data in {args.out}; point the paper suite at it with: source {args.out}/env.sh")
    for var, path in card["env"].items():
        print(f"  {var}={path}")
    return 0


def _data_vinvl(args: argparse.Namespace) -> int:
    from softclip.data.attach import attach_vinvl
    from softclip.data.readers.webdataset import expand_shards

    missing = [f"--{n.replace('_', '-')}" for n in ("shards", "features_tsv", "labels_tsv") if not getattr(args, n)]
    if missing:
        raise ConfigError(f"softclip data vinvl: {', '.join(missing)} required")
    shards = expand_shards(args.shards, None)
    out = attach_vinvl(shards, Path(args.features_tsv), Path(args.labels_tsv), args.out and Path(args.out),
                       id_field=args.id_field)  # fmt: skip
    total = out["total"]
    lost = {k: v for k, v in total.items() if k not in ("samples", "attached")}
    print(f"VinVL sidecars: {total.get('attached', 0)} of {total.get('samples', 0)} samples in {len(shards)} shards"
          + (f"; without: {', '.join(f'{k}={v}' for k, v in sorted(lost.items()))}" if lost else ""))  # fmt: skip
    return 0


def _add_train(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--run-dir", default=None, help="run folder (default: OUTPUT_DIR/NAME from the config)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --run-dir")
    p.add_argument("--no-eval", action="store_true", help="no evaluation: neither periodic (train.eval_every) nor at the end, and no "
                   "check of the evaluation datasets before training")


@command("train", "train one model (resumes automatically from the run folder's last checkpoint)", _add_train)
def cmd_train(args: argparse.Namespace) -> int:
    from softclip.resources import resolve
    from softclip.train import train

    # outside a checkout, ablations/base.yaml is the copy shipped in the package
    cfg = load_config(resolve(args.config), args.overrides, profile=args.profile)
    hook = preflight = None
    if not args.no_eval:  # --no-eval: no evaluation at all, so no evaluation datasets are needed either
        from softclip.evaluation.hooks import periodic_evaluator, periodic_suite
        from softclip.evaluation.suite import preflight as check_suite

        suites = [cfg.eval.suite]
        if cfg.train.eval_every > 0:
            hook = periodic_evaluator(cfg)
            suites = list(dict.fromkeys([*suites, periodic_suite(cfg)]))

        def preflight() -> None:  # the suites and their datasets located and parsed before the first step
            for suite in suites:
                check_suite(suite, cfg.data.root)

    run_dir = train(cfg, run_dir=args.run_dir, overwrite=args.overwrite, evaluate=hook, preflight=preflight)
    print(f"run finished: {run_dir}")
    if not args.no_eval:
        from softclip.evaluation import evaluate_checkpoint
        from softclip.threads import cpu_threads

        with cpu_threads(cfg.train.threads):  # as an ablation job evaluates: on the run's threads
            _print_results(evaluate_checkpoint(run_dir, cfg.eval.suite))
    return 0


def _print_results(results: dict[str, dict[str, float]]) -> None:
    for bench, metrics in results.items():
        shown = ", ".join(f"{k}={v:.2f}" for k, v in list(metrics.items())[:8] if isinstance(v, (int, float)))
        print(f"{bench}: {shown}")


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=None, help="run folder or checkpoint file (or use --arch/--weights)")
    p.add_argument("--suite", default=None, help="evaluation suite YAML (default: the run's eval.suite; with "
                   "--arch: eval/paper.yaml)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="recompute results that already exist")
    p.add_argument("--arch", default=None, help="score an open_clip model not trained here: its architecture "
                   "(e.g. RN50, ViT-B-32), built from scratch (nothing is downloaded); needs --weights and --out")  # fmt: skip
    p.add_argument("--weights", default=None, help="with --arch: a plain state dict or an open_clip_train "
                   "checkpoint ({'state_dict': {'module.<key>': ...}}), loaded with weights_only=True")  # fmt: skip
    p.add_argument("--out", default=None, help="result folder (default RUN/eval; required with --arch)")
    p.add_argument("--data-root", default=None, help="root for the suite's relative dataset paths (default: the "
                   "run's data.root; with --arch: the current folder)")  # fmt: skip


@command("eval", "evaluate a run, a checkpoint, or open_clip weights (--arch --weights) on a suite; "
         "one result JSON per benchmark", _add_eval)  # fmt: skip
def cmd_eval(args: argparse.Namespace) -> int:
    if args.arch or args.weights:
        from softclip.evaluation.external import evaluate_weights

        if not (args.arch and args.weights and args.out) or args.target:
            raise ConfigError("softclip eval: --arch needs --weights and --out, and no run folder")
        suite = args.suite or "eval/paper.yaml"
        _print_results(evaluate_weights(args.arch, args.weights, suite, args.out, data_root=args.data_root,
                                        force=args.force))  # fmt: skip
        return 0
    if args.target is None:
        raise ConfigError("softclip eval: give a run folder or checkpoint, or --arch with --weights")
    from softclip.evaluation import evaluate_checkpoint
    from softclip.train.rundir import check_unedited

    check_unedited(args.target)  # results are filed under config.yaml's hash: refuse one edited after training
    _print_results(evaluate_checkpoint(args.target, args.suite, force=args.force, data_root=args.data_root,
                                       out_dir=args.out))  # fmt: skip
    return 0


def _add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="all",
                   help="targets, contrastives, divergences, pairings, impls, one_hot_rows, roi_logit_scales, aggregations, "
                        "launchers, samplers, pruners, trials, all")  # fmt: skip


@command("list", "list the registered objective parts, launchers, samplers, pruners and trial functions", _add_list)
def cmd_list(args: argparse.Namespace) -> int:
    from softclip import objective
    from softclip.launch import LAUNCHERS
    from softclip.objective.reference import ONE_HOT_RULES
    from softclip.objective.scoring import CONTRASTIVES, IMPLS, ROI_SCALES
    from softclip.sweep.study import PRUNERS, SAMPLERS
    from softclip.sweep.worker import TRIALS

    tables = {
        "targets": objective.list_targets(),
        "contrastives": CONTRASTIVES.names(),
        "divergences": objective.list_divergences(),
        "pairings": objective.list_pairings(),
        "impls": IMPLS.names(),
        "one_hot_rows": list(ONE_HOT_RULES),
        "roi_logit_scales": ROI_SCALES.names(),
        "aggregations": objective.list_aggregators(),
        "launchers": LAUNCHERS.names(),
        "samplers": SAMPLERS.names(),
        "pruners": PRUNERS.names(),
        "trials": TRIALS.names(),
    }
    if args.what != "all" and args.what not in tables:
        raise ConfigError(f"list: unknown table {args.what!r}; choose from {', '.join(tables)} or all")
    for name, values in tables.items():
        if args.what in ("all", name):
            print(f"{name}: {', '.join(values)}")
    return 0


def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="sweep YAML, e.g. sweeps/beta_tau.yaml")
    p.add_argument("--profile", default=None, help="profile of the sweep and its base config: smoke, quick, paper")
    p.add_argument("--launcher", default=None, help=LAUNCHER_HELP)
    p.add_argument("--cluster", default=None, help="cluster YAML for slurm (overrides launcher.cluster)")
    p.add_argument("--n-trials", type=int, default=None, help="complete + pruned trials to reach")
    p.add_argument("--workers", type=int, default=None, help="trials in flight at once")
    p.add_argument("--status", action="store_true", help="print the trials table, the best so far and failures")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a study of this name run with another space/objective/sampler/base, and restart")


@command("sweep", "run or resume an Optuna sweep (its workers as one job array), or show its status", _add_sweep)
def cmd_sweep(args: argparse.Namespace) -> int:
    from softclip.config import with_cluster
    from softclip.sweep import SweepError, load_sweep, run_sweep, sweep_status

    spec = with_cluster(load_sweep(args.config, profile=args.profile), args.cluster)
    if args.status:
        print(sweep_status(spec))
        return 0
    try:
        result = run_sweep(spec, launcher=args.launcher, n_trials=args.n_trials, workers=args.workers,
                           overwrite=args.overwrite)
    except SweepError as err:
        print(f"softclip: sweep stopped: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a storage file that cannot be written: one line naming it, whatever wrapped it
        failure = _storage_failure(spec, err)
        if failure is None:
            raise
        raise failure from err
    print(sweep_status(spec, result.storage_url))
    return 0


def _storage_failure(spec, err: BaseException) -> BaseException | None:
    """A WriteError naming the sweep's storage file (SQLite database or journal) when ``err`` is a failed write
    to it (SQLite says "database or disk is full" through SQLAlchemy and Optuna); None otherwise."""
    from softclip.errors import SoftclipError, io_cause, write_error
    from softclip.sweep.study import JOURNAL_PREFIX, journal_path, resolve_storage_url
    from softclip.sweep_spec import sweep_dir

    cause = io_cause(err)
    if cause is None or isinstance(err, SoftclipError):
        return None
    url = resolve_storage_url(spec.storage, sweep_dir(spec))
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
    elif url.startswith(JOURNAL_PREFIX):
        path = journal_path(url)
    else:
        return None
    return write_error(path, cause)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected integers like 0,1,2") from None


def _add_ablate(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="ablation YAML, e.g. ablations/disentangle.yaml")
    p.add_argument("--profile", default=None, help="profile of the ablation and its base config")
    p.add_argument("--launcher", default=None, help=LAUNCHER_HELP)
    p.add_argument("--seeds", type=_seed_list, default=None, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--workers", type=int, default=None, help="runs in flight at once")
    p.add_argument("--cluster", default=None, help="cluster YAML for slurm (overrides launcher.cluster)")


@command("ablate", "run an ablation grid (variants x seeds); finished runs are skipped", _add_ablate)
def cmd_ablate(args: argparse.Namespace) -> int:
    from softclip.ablate import load_ablation, run_ablation
    from softclip.config import with_cluster

    spec = with_cluster(load_ablation(args.config, profile=args.profile, seeds=args.seeds), args.cluster)
    result = run_ablation(spec, launcher=args.launcher, workers=args.workers)
    print(f"ablation {spec.name}: {len(result.jobs)} runs, {len(result.skipped)} already finished, "
          f"{len(result.outcomes) - len(result.failed)} done now, {len(result.failed)} failed")  # fmt: skip
    for outcome in result.failed:
        job = outcome.args[0]
        print(f"  FAILED {job.variant} seed {job.seed}: {(outcome.error or '').splitlines()[0]}", file=sys.stderr)
    return 1 if result.failed else 0


def _add_report(p: argparse.ArgumentParser) -> None:
    from softclip.report.command import add_arguments

    add_arguments(p)


@command("report", "tables (md, LaTeX, HTML, CSV), statistics and figures from runs' result JSON", _add_report)
def cmd_report(args: argparse.Namespace) -> int:
    from softclip.report import ReportError
    from softclip.report.command import run

    try:
        return run(args)
    except ReportError as err:
        print(f"softclip: report error: {err}", file=sys.stderr)
        return 2


def _part_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    from softclip.reproduce import PARTS

    p.add_argument("--profile", default="quick", help="smoke | quick | long | rehearsal | paper (default quick)")
    p.add_argument("--launcher", default=None, help=LAUNCHER_HELP)
    p.add_argument("--workers", type=int, default=None, help="runs in flight at once")
    p.add_argument("--cluster", default=None, help="cluster YAML for slurm (overrides launcher.cluster)")
    p.add_argument("--only", type=_part_list, default=None, help=f"comma-separated parts of: {', '.join(PARTS)}")
    p.add_argument("--seeds", type=_seed_list, default=None, help="override every ablation's seeds, e.g. 0,1")
    p.add_argument("--exclude", type=_part_list, default=[], help="variants left out, e.g. targets.selfsim_raw")
    p.add_argument("--out", default=None, help="report folder (default reports/<profile>)")


@command("reproduce", "run every ablation and the beta x tau sweep of a profile, then write its report",
         _add_reproduce)  # fmt: skip
def cmd_reproduce(args: argparse.Namespace) -> int:
    from softclip.reproduce import reproduce

    result = reproduce(args.profile, launcher=args.launcher, workers=args.workers, only=args.only,
                       seeds=args.seeds, out=args.out, cluster=args.cluster, exclude=args.exclude,
                       command="softclip " + shlex.join(args.argv))  # fmt: skip
    print(f"reproduce {args.profile}: {result.planned} ablation runs ({result.unique} distinct): "
          f"{result.skipped} already finished, {result.trained} trained now, {len(result.failed)} failed; "
          f"sweeps {result.sweeps}; {result.seconds:.0f} s")  # fmt: skip
    for line in result.failed:
        print(f"  FAILED {line}", file=sys.stderr)
    if result.report:
        print(f"report: {result.report}")
    return 1 if result.failed else 0


# ----------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softclip",
        description="SoftCLIP reference suite: train, evaluate, sweep and report (arXiv 2303.17561).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.add_args(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def _os_error(err: OSError) -> str:
    """``No space left on device: PATH`` for an OS error outside the suite's writers (which say ``cannot write
    PATH: ...`` themselves); libraries' OSErrors without errno give their first line."""
    from softclip.errors import os_error_reason

    where = f" {err.filename}" if err.filename else ""
    if err.filename2:
        where += f" -> {err.filename2}"
    return f"{os_error_reason(err)}{':' if where else ''}{where}".strip()


def describe_error(err: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error the CLI reports without a traceback; None for a bug."""
    from softclip.errors import SoftclipError

    if isinstance(err, KeyboardInterrupt):  # Ctrl-C 130; a scheduler's stop signal 128 + signum (SIGTERM 143)
        return getattr(err, "exit_code", 130), str(err) or "interrupted"
    if isinstance(err, SoftclipError):
        return err.exit_code, f"{err.label}: {err}"
    if isinstance(err, OSError):  # with or without errno (libraries raise bare OSError("...") too)
        return 1, f"error: {_os_error(err)}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    # key=value overrides may come after options (`train CFG --run-dir X loss.beta=0.5`): collect the leftovers
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for records of the command line (reproduce)
    if extra:
        stray = [tok for tok in extra if tok.startswith("-") or "=" not in tok or not hasattr(args, "overrides")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        check_no_repeats(getattr(args, "overrides", None) or ())
        return COMMANDS[args.command].run(args)
    except BaseException as err:  # noqa: BLE001 - every known error becomes one line and an exit code
        known = describe_error(err)
        if known is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"softclip: {known[1]}", file=sys.stderr)
        return known[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
