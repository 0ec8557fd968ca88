"""Sweep driver logic with a fast fake trial (tests/unit/launch/fakes.py): ask/tell to n_trials, failures,
pruning, restarts without duplicates, stale-trial retry, storages and ``--status`` (in-process launcher)."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

from softclip.sweep import load_sweep, open_study, run_sweep, sweep_status
from softclip.sweep.study import run_key
from tests.unit.launch import fakes

ROOT = Path(__file__).resolve().parents[2]
FAKE = "tests.unit.launch.fakes:quadratic_trial"
pytestmark = pytest.mark.timeout(300)


def make_spec(tmp_path: Path, **fields):
    data = {
        "name": "fake", "base": str(ROOT / "ablations" / "base.yaml"), "trial": FAKE,
        "overrides": {"train.steps": 12, "train.eval_every": 3},
        "space": {"loss.beta": {"type": "float", "low": 0.0, "high": 0.9},
                  "loss.tau": {"type": "float", "low": 0.02, "high": 0.3, "log": True}},
        "objective": {"metric": "synth/score", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0}, "n_trials": 4, "output_dir": str(tmp_path / "runs"),
        "heartbeat_interval": 1, "grace_period": 2, **fields,
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_sweep(path, "smoke")


def old_heartbeat(url: str, number: int, hours: float) -> None:
    """Give trial ``number`` of an RDB study a heartbeat ``hours`` old (a lost worker, without waiting for it)."""
    with sqlalchemy.create_engine(url).begin() as conn:
        conn.execute(sqlalchemy.text("INSERT INTO trial_heartbeats (trial_id, heartbeat) "
                                     "SELECT trial_id, :t FROM trials WHERE number = :n"),
                     {"n": number, "t": datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
                      - datetime.timedelta(hours=hours)})  # fmt: skip


def states(spec) -> Counter:
    return Counter(t.state.name for t in open_study(spec).trials)


def test_sweep_reaches_n_trials_and_values_come_from_the_trial(tmp_path):
    spec = make_spec(tmp_path)
    result = run_sweep(spec, launcher="inprocess")
    assert result.counts == {"COMPLETE": 4}
    study = open_study(spec)
    for t in study.trials:
        assert t.values[0] == pytest.approx(fakes.score(t.params["loss.beta"], t.params["loss.tau"]))
        assert sorted(t.intermediate_values) == [3, 6, 9, 12]
        assert Path(t.user_attrs["run_dirs"][0]).name == f"fake-t{t.number:04d}-s0"
    assert result.best[0]["values"][0] == max(t.values[0] for t in study.trials)
    assert result.storage_url == f"sqlite:///{(tmp_path / 'runs' / 'smoke' / 'fake' / 'study.db').resolve()}"


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = make_spec(tmp_path, space={"loss.beta": {"type": "categorical", "choices": [0.2, 0.97]}},
                     sampler={"name": "grid", "seed": 0}, n_trials=1)  # fmt: skip
    result = run_sweep(spec, launcher="inprocess")
    study = open_study(spec)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert result.counts["COMPLETE"] == 1
    assert failed and all("fake divergence" in t.user_attrs["error"] for t in failed)
    text = sweep_status(spec)
    assert "failures (" in text and "ValueError: fake divergence" in text and "best (synth/score maximize)" in text


def test_too_many_failures_stop_the_sweep(tmp_path):
    from softclip.sweep import SweepError

    spec = make_spec(tmp_path, space={"loss.beta": {"type": "float", "low": 0.96, "high": 0.99}}, max_failures=2)
    with pytest.raises(SweepError, match="2 trials failed"):
        run_sweep(spec, launcher="inprocess")


def test_median_pruner_prunes_on_a_seeded_case(tmp_path):
    spec = make_spec(tmp_path, n_trials=8, pruner={"name": "median", "options": {"n_startup_trials": 2}},
                     sampler={"name": "random", "seed": 1})  # fmt: skip
    result = run_sweep(spec, launcher="inprocess")
    assert result.counts["COMPLETE"] + result.counts.get("PRUNED", 0) == 8
    assert result.counts.get("PRUNED", 0) >= 1
    pruned = [t for t in open_study(spec).trials if t.state.name == "PRUNED"]
    assert all(max(t.intermediate_values) < 12 for t in pruned)  # stopped before the last step


def test_restart_reaches_exactly_n_trials_without_duplicates(tmp_path):
    spec = make_spec(tmp_path)
    run_sweep(spec, launcher="inprocess", n_trials=2)
    run_sweep(spec, launcher="inprocess")
    run_sweep(spec, launcher="inprocess")  # already finished: no new trial
    trials = open_study(spec).trials
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 4}
    params = [tuple(t.params.values()) for t in trials]
    assert len(set(params)) == 4, "a resumed sweep must not replay the same random points"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_stale_running_trial_is_retried_and_resumes_its_run_folder(tmp_path):
    spec = make_spec(tmp_path, n_trials=2)
    study = open_study(spec)
    lost = study.ask({"loss.beta": optuna.distributions.FloatDistribution(0.0, 0.9),
                      "loss.tau": optuna.distributions.FloatDistribution(0.02, 0.3, log=True)})  # fmt: skip
    from softclip.sweep import sweep_dir
    from softclip.sweep.study import resolve_storage_url

    old_heartbeat(resolve_storage_url(spec.storage, sweep_dir(spec)), lost.number, hours=1)  # a lost worker's
    run_dir = tmp_path / "runs" / "smoke" / "fake" / "trials" / f"fake-t{lost.number:04d}-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "progress.json").write_text('{"step": 5, "starts": 1}')  # its checkpoint
    run_sweep(spec, launcher="inprocess")
    trials = open_study(spec).trials
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 2, "FAIL": 1}
    retry = next(t for t in trials if t.number != lost.number and t.params == lost.params)
    assert run_key(retry) == lost.number
    assert retry.user_attrs["run_dirs"] == [str(run_dir.resolve())]
    assert sorted(retry.intermediate_values) == [6, 9, 12]  # resumed after step 5
    assert '"starts": 2' in (run_dir / "progress.json").read_text()


def test_journal_storage(tmp_path):
    spec = make_spec(tmp_path, storage=f"journal:{tmp_path / 'j' / 'study.log'}", n_trials=3,
                     pruner={"name": "median", "options": {"n_startup_trials": 1}})  # fmt: skip
    result = run_sweep(spec, launcher="inprocess")
    assert result.storage_url.startswith("journal:/")
    assert (tmp_path / "j" / "study.log").is_file()
    assert sum(result.counts.get(s, 0) for s in ("COMPLETE", "PRUNED")) == 3
    assert "finished 3/3" in sweep_status(spec)


def test_status_before_any_run(tmp_path):
    spec = make_spec(tmp_path)
    assert "no study" in sweep_status(spec)


@pytest.mark.integration
def test_processes_launcher_sweep(tmp_path):
    spec = make_spec(tmp_path, n_trials=3)
    result = run_sweep(spec, launcher="processes", workers=2)
    assert result.counts == {"COMPLETE": 3}


@pytest.mark.integration
def test_grid_sweep_on_two_worker_processes_runs_each_point_once(tmp_path):
    spec = make_spec(tmp_path, n_trials=None, sampler={"name": "grid", "seed": 0},
                     space={"loss.beta": {"type": "categorical", "choices": [0.1, 0.3]},
                            "loss.tau": {"type": "categorical", "choices": [0.03, 0.07]}})  # fmt: skip
    result = run_sweep(spec, launcher="processes", workers=2)
    assert result.counts["COMPLETE"] == 4
    points = [tuple(sorted(t.params.items())) for t in open_study(spec).trials if t.state.name == "COMPLETE"]
    assert len(set(points)) == 4, f"a grid point ran twice: {points}"


@pytest.mark.integration
def test_real_smoke_training_trial(tmp_path):
    """One trial of the real train + eval on the smoke profile, pruner fed by the periodic evaluation."""
    spec = make_spec(tmp_path, trial="train", n_trials=1, overrides={"train.eval_every": 10},
                     space={"loss.beta": {"type": "categorical", "choices": [0.3]}},
                     objective={"metric": "retrieval/rsum"}, sampler={"name": "grid"},
                     pruner={"name": "median"}, heartbeat_interval=30)  # fmt: skip
    result = run_sweep(spec, launcher="inprocess")
    assert result.counts == {"COMPLETE": 1}
    trial = open_study(spec).trials[0]
    assert sorted(trial.intermediate_values) == [10, 20, 30]
    run_dir = Path(trial.user_attrs["run_dirs"][0])
    assert (run_dir / "done.json").is_file()
    saved = json.loads((run_dir / "eval" / "retrieval.json").read_text())
    assert trial.values[0] == pytest.approx(saved["metrics"]["rsum"])


def test_cli_sweep_runs_reports_and_refuses_bad_launchers(tmp_path, capsys):
    from softclip.cli import main

    spec = make_spec(tmp_path, n_trials=2)
    path = spec.source
    assert main(["sweep", path, "--profile", "smoke", "--launcher", "inprocess"]) == 0
    out = capsys.readouterr().out
    assert "finished 2/2" in out and "best (synth/score maximize)" in out
    assert main(["sweep", path, "--profile", "smoke", "--status"]) == 0
    assert "finished 2/2" in capsys.readouterr().out
    assert main(["sweep", path, "--profile", "smoke", "--launcher", "slurmm"]) == 2
    assert "did you mean 'slurm'" in capsys.readouterr().err


def test_cli_ablate_config_error_exits_2(tmp_path, capsys):
    from softclip.cli import main

    bad = tmp_path / "a.yaml"
    bad.write_text(yaml.safe_dump({"name": "a", "base": str(ROOT / "ablations" / "base.yaml"),
                                   "variants": {"v": {"loss.bta": 1}}}))  # fmt: skip
    assert main(["ablate", str(bad), "--seeds", "0,1"]) == 2
    assert "unknown key 'loss.bta'" in capsys.readouterr().err


def _worker(spec, target: int):
    """A worker on the spec's study, as a launcher would start it (the driver creates the study first)."""
    from softclip.sweep import sweep_dir
    from softclip.sweep.study import resolve_storage_url
    from softclip.sweep.worker import Worker, WorkerTask

    open_study(spec)
    return Worker(WorkerTask(spec.model_dump(mode="json"), resolve_storage_url(spec.storage, sweep_dir(spec)), target))


def test_a_trial_started_when_the_target_is_covered_is_failed_as_surplus(tmp_path):
    from softclip.sweep.worker import SURPLUS_ATTR, TrialAbandoned

    spec = make_spec(tmp_path, n_trials=1)
    run_sweep(spec, launcher="inprocess")
    worker = _worker(spec, target=1)
    assert worker.count() >= 1  # finished and running trials cover the target
    assert worker.run()["trials"] == 0  # a late worker starts nothing
    # two workers asked at once, past the pre-check: the later trial gives way at its start
    worker.study.optimize(worker.objective, n_trials=3, catch=(TrialAbandoned,))
    trials = worker.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]  # and the worker stopped
    assert "cover the target" in trials[1].user_attrs[SURPLUS_ATTR] and not trials[1].intermediate_values
    assert run_sweep(spec, launcher="inprocess").counts == {"COMPLETE": 1, "SURPLUS": 1}


def test_other_ranks_of_a_multi_task_job_train_the_trials_rank_0_starts(tmp_path, monkeypatch):
    from softclip.sweep.worker import JOB_ATTR, LEFT_ATTR

    spec = make_spec(tmp_path, n_trials=2)
    worker = _worker(spec, target=2)
    trial = worker.study.ask({"loss.beta": optuna.distributions.FloatDistribution(0.0, 0.9),
                              "loss.tau": optuna.distributions.FloatDistribution(0.02, 0.3, log=True)})  # fmt: skip
    trial.set_user_attr(JOB_ATTR, worker.id)  # rank 0 started it
    calls = []
    monkeypatch.setattr(worker, "fn", lambda cfg, run_dir, report: calls.append((cfg.loss.beta, run_dir.name)))
    worker.study.set_user_attr(LEFT_ATTR + worker.id, True)  # and then left
    monkeypatch.setenv("RANK", "1")
    assert worker.run() == {"worker": worker.id, "trials": 1, "rank": 1}
    assert calls == [(trial.params["loss.beta"], f"fake-t{trial.number:04d}-s0")]


def test_a_requeued_worker_retries_its_running_trial_in_the_same_run_folder(tmp_path):
    """A job requeued by SLURM keeps its job id: the trial it was running is failed, re-enqueued, and resumed
    from its run folder by the same worker."""
    from softclip.sweep.worker import JOB_ATTR

    spec = make_spec(tmp_path, n_trials=1)
    worker = _worker(spec, target=1)
    trial = worker.study.ask({"loss.beta": optuna.distributions.FloatDistribution(0.0, 0.9),
                              "loss.tau": optuna.distributions.FloatDistribution(0.02, 0.3, log=True)})  # fmt: skip
    trial.set_user_attr(JOB_ATTR, worker.id)  # this job ran it before the requeue
    run_dir = tmp_path / "runs" / "smoke" / "fake" / "trials" / f"fake-t{trial.number:04d}-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "progress.json").write_text('{"step": 7, "starts": 1}')
    assert worker.run()["trials"] == 1
    trials = open_study(spec).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert run_key(trials[1]) == trial.number and trials[1].params == trial.params
    assert sorted(trials[1].intermediate_values) == [9, 12]  # resumed after step 7


def test_a_second_driver_waits_for_the_trials_another_one_runs(tmp_path, monkeypatch):
    """A trial RUNNING with a fresh heartbeat belongs to a live worker: a second driver waits for it instead of
    starting more than n_trials, and reports that it waited."""
    import softclip.sweep.driver
    from softclip.sweep import sweep_dir
    from softclip.sweep.study import resolve_storage_url

    spec = make_spec(tmp_path, n_trials=1)
    study = open_study(spec)
    other = study.ask({"loss.beta": optuna.distributions.FloatDistribution(0.0, 0.9),
                       "loss.tau": optuna.distributions.FloatDistribution(0.02, 0.3, log=True)})  # fmt: skip
    old_heartbeat(resolve_storage_url(spec.storage, sweep_dir(spec)), other.number, hours=0)  # alive just now
    waits = []
    # the first driver's worker finishes its trial while the second driver waits
    monkeypatch.setattr(softclip.sweep.driver.time, "sleep", lambda s: waits.append(study.tell(other, 1.0)))
    result = run_sweep(spec, launcher="inprocess")
    assert result.waited == 1 and len(waits) == 1
    assert result.counts == {"COMPLETE": 1}


def test_resuming_a_sweep_with_another_identity_names_the_keys_and_keeps_the_record(tmp_path, capsys):
    """Adding a parameter, changing a categorical's choices or the objective under the same name is refused
    (one line, exit 2, the differing keys named); the sweep file recorded beside the study is not rewritten;
    --overwrite starts the study again from the new file."""
    from softclip.cli import main

    spec = make_spec(tmp_path, n_trials=1, space={"loss.beta": {"type": "categorical", "choices": [0.1, 0.3]}},
                     sampler={"name": "grid", "seed": 0})  # fmt: skip
    run_sweep(spec, launcher="inprocess")
    record = tmp_path / "runs" / "smoke" / "fake" / "sweep.yaml"
    before = record.read_text()
    edits = [({"space": {"loss.beta": {"type": "categorical", "choices": [0.1, 0.5]}}}, "space.loss.beta.choices"),
             ({"space": {"loss.beta": {"type": "categorical", "choices": [0.1, 0.3]},
                         "loss.tau": {"type": "categorical", "choices": [0.07]}}}, "space.loss.tau.choices"),
             ({"objective": {"metric": "synth/score", "direction": "minimize"}}, "objective"),
             ({"overrides": {"train.steps": 13, "train.eval_every": 3}}, "base.train.steps: 12 -> 13")]  # fmt: skip
    for fields, key in edits:
        edited = make_spec(tmp_path, n_trials=1, sampler={"name": "grid", "seed": 0},
                           **{"space": {"loss.beta": {"type": "categorical", "choices": [0.1, 0.3]}}, **fields})
        assert main(["sweep", edited.source, "--profile", "smoke", "--launcher", "inprocess"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and key in err and "--overwrite" in err and "new name" in err, err
        assert record.read_text() == before
    assert Counter(t.state.name for t in open_study(spec).trials) == {"COMPLETE": 1}  # no FAIL trial left behind
    assert main(["sweep", edited.source, "--profile", "smoke", "--launcher", "inprocess", "--overwrite"]) == 0
    assert "13" in yaml.safe_load(record.read_text())["overrides"].__repr__()


def test_an_empty_search_space_is_a_config_error(tmp_path):
    from softclip.config import ConfigError

    with pytest.raises(ConfigError, match="search space is empty"):
        make_spec(tmp_path, space={})
