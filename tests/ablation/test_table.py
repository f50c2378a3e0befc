"""scripts/ablation_table.py and segdcn.ablation: rows, mean +- std over seeds, the paper's numbers and the
difference, refusal of other datasets and experiments by name, missing rows and runs by name, W&B runs
through the same path as run directories, and the paper-numbers file against the paper (issue #7)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from segdcn.ablation import MixedRunsError, build_table, read_run_dirs, runs_from_wandb, to_csv, to_markdown
from segdcn.paper import load_paper
from tests.helpers import run_python


def write_run(
    root: Path, name: str, layers: int, seed: int, miou: float | None, *, dataset="voc_aug", experiment="paper_voc",
    state="finished", dilation=None, it_per_s=None,
) -> Path:  # fmt: skip
    """A run directory as segdcn-train leaves it: summary.json with results and the key config values."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {
        "experiment": experiment, "dataset.name": dataset, "model.backbone.name": "resnet101",
        "model.backbone.output_stride": 16, "model.dcn.layers": layers, "model.dcn.at": [],
        "model.dcn.modulated": False, "model.backbone.res5_dilation": dilation, "seed": seed,
        "trainer.max_iters": 30000, "trainer.batch_size": 8, "optim.lr": 0.001,
    }  # fmt: skip
    summary = {"miou": miou, "pixel_acc": 0.9, "config": config, "state": state, "wandb": None}
    if it_per_s is not None:
        summary["it_per_s"] = it_per_s
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def table_cli(*args) -> SimpleNamespace:
    result = run_python("scripts/ablation_table.py", *map(str, args), timeout=120)
    return SimpleNamespace(code=result.returncode, out=result.stdout, err=result.stderr)


def row_line(markdown: str, label: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_speed_line_gives_each_rows_median_speed_and_time_ratio(tmp_path):
    sweep = tmp_path / "sweep"
    runs = [(0, 0, 15.0), (0, 1, 14.0), (0, 2, 14.4), (3, 0, 12.0), (3, 1, 11.0), (3, 2, 11.6)]
    for i, (layers, seed, speed) in enumerate(runs):
        write_run(sweep, str(i), layers, seed, 0.7, it_per_s=speed)
    result = table_cli(sweep, "--rows", "0,3")
    assert result.code == 0, result.err
    line = next(x for x in result.out.splitlines() if x.startswith("- training speed"))
    assert line.endswith(f"none 14.4 it/s; res5a,b,c 11.6 it/s ({14.4 / 11.6:.2f}x the first row's time)")
    # one run without a recorded speed (a run from before it was recorded): no line
    write_run(sweep, "6", 3, 3, 0.7)
    result = table_cli(sweep, "--rows", "0,3")
    assert result.code == 0, result.err
    assert "training speed" not in result.out


def test_paper_numbers_file_holds_the_papers_tables():
    # typed from the paper (issue #7), not from the file under test
    paper = load_paper()
    table1 = {r.dcn_layers: (r.miou["voc_aug"], r.miou["cityscapes"]) for r in paper.table("table1").rows}
    assert table1 == {0: (69.7, 70.4), 1: (73.9, 73.5), 2: (74.8, 74.4), 3: (75.2, 75.2), 6: (74.8, 75.1)}
    table3 = {r.key: (r.miou["voc_aug"], r.miou["cityscapes"]) for r in paper.table("table3").rows}
    assert table3 == {(0, 4): (73.1, 71.9), (0, 6): (73.6, 72.7), (0, 8): (73.2, 72.4), (3, None): (75.3, 75.2)}
    t4 = paper.table4
    assert t4["params_m"] == {"plain": 46.0, "deformable": 46.1}
    assert t4["forward_s"] == {
        "voc_aug": {"plain": 0.084, "deformable": 0.088},
        "cityscapes": {"plain": 0.610, "deformable": 0.696},
    }
    assert "1703.06211" in paper.arxiv and paper.source


def test_table1_mean_std_paper_and_difference(tmp_path):
    sweep = tmp_path / "sweep"
    for i, (layers, seed, miou) in enumerate([(0, 0, 0.700), (0, 1, 0.704), (3, 0, 0.751), (3, 1, 0.757)]):
        write_run(sweep, str(i), layers, seed, miou)
    result = table_cli(sweep, "--rows", "0,3")
    assert result.code == 0, result.err
    none, dcn = row_line(result.out, "none"), row_line(result.out, "res5a,b,c")
    mean0, std0 = statistics.fmean([70.0, 70.4]), statistics.stdev([70.0, 70.4])
    assert none[2:4] == ["0,1", f"{mean0:.1f} +- {std0:.1f}"] and none[5] == "69.7"
    assert dcn[1] == "res5a, res5b, res5c" and dcn[5] == "75.2"
    assert dcn[7] == f"{statistics.fmean([75.1, 75.7]) - 75.2:+.1f}"  # ours - paper, VOC on VOC
    assert "missing" not in result.out
    rows = list(csv.DictReader(io.StringIO((sweep / "ablation_table1.csv").read_text())))
    assert [(r["dcn_layers"], r["paper_miou"]) for r in rows] == [("0", "69.7000"), ("3", "75.2000")]
    assert float(rows[1]["miou_mean"]) == pytest.approx(75.4)
    assert (sweep / "ablation_table1.png").read_bytes()[:4] == b"\x89PNG"
    assert (sweep / "best_run.txt").read_text().strip() == str(sweep / "3")  # the highest mIoU, for export


def test_best_deformable_run_is_named_when_a_plain_run_wins(tmp_path):
    sweep = tmp_path / "sweep"
    for i, (layers, seed, miou) in enumerate([(0, 0, 0.80), (0, 1, 0.70), (3, 0, 0.72), (3, 1, 0.75)]):
        write_run(sweep, str(i), layers, seed, miou)
    assert table_cli(sweep, "--rows", "0,3").code == 0
    assert (sweep / "best_run.txt").read_text().strip() == str(sweep / "0")
    assert (sweep / "best_deformable_run.txt").read_text().strip() == str(sweep / "3")  # what make demo exports
    plain = tmp_path / "plain"
    write_run(plain, "0", 0, 0, 0.8)
    assert table_cli(plain, "--rows", "0").code == 0
    assert not (plain / "best_deformable_run.txt").exists()


def test_mixed_datasets_are_refused_by_name(tmp_path):
    voc = write_run(tmp_path, "voc_run", 0, 0, 0.70)
    cs = write_run(tmp_path, "cityscapes_run", 3, 0, 0.75, dataset="cityscapes", experiment="paper_voc")
    result = table_cli(voc, cs)
    assert result.code == 2
    assert "dataset.name" in result.err and str(cs) in result.err and str(voc) in result.err
    assert "| none |" not in result.out  # nothing mixed in, no table
    named = table_cli(voc, cs, "--dataset", "voc_aug")
    assert named.code == 2 and f"dataset.name=cityscapes: {cs}" in named.err and f"{voc}" not in named.err


def test_runs_on_two_folders_are_refused_by_name(tmp_path):
    """dataset=folder is one name for every user's folder: the recorded root tells them apart."""
    runs = []
    for name, root, layers in (("a", "data/cats", 0), ("b", "data/cats/", 3), ("c", "data/dogs", 3)):
        run = write_run(tmp_path, name, layers, 0, 0.7, dataset="folder")
        summary = json.loads((run / "summary.json").read_text())
        summary["config"]["dataset.root"] = root
        (run / "summary.json").write_text(json.dumps(summary))
        runs.append(run)
    mixed, _ = read_run_dirs(runs)
    with pytest.raises(MixedRunsError, match=r"more than one folder.*data/cats: .*a, .*b; .*data/dogs: .*c"):
        build_table(mixed, "table1")
    same, _ = read_run_dirs(runs[:2])  # one folder, spelt two ways
    assert build_table(same, "table1", rows=[0, 3]).dataset == "folder"


def test_other_experiments_are_refused_by_name(tmp_path):
    runs, _ = read_run_dirs([write_run(tmp_path, "a", 0, 0, 0.7), write_run(tmp_path, "b", 3, 0, 0.7, experiment="x")])
    with pytest.raises(MixedRunsError, match=r"experiment=x: .*b"):
        build_table(runs, "table1")


def test_missing_rows_runs_and_unfinished_jobs_are_named(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, "0", 0, 0, 0.70)
    write_run(sweep, "1", 0, 1, 0.71)
    write_run(sweep, "2", 3, 0, 0.75)
    write_run(sweep, "3", 3, 1, None, state="failed")
    (sweep / "4" / ".hydra").mkdir(parents=True)  # a job that died before writing summary.json
    result = table_cli(sweep)
    assert result.code == 0, result.err
    for label in ("res5c (model.dcn.layers=1)", "res5b,c (model.dcn.layers=2)", "res4b20,b21,b22 (model.dcn.layers=6)"):
        assert any(line.startswith("- missing row: ") and line.endswith(label) for line in result.out.splitlines())
    assert row_line(result.out, "res5c")[3] == "missing"
    assert "- missing run: model.dcn.layers=3 seed=1" in result.out
    assert f"{sweep / '3'}: left out, state failed" in result.out
    assert f"{sweep / '4'}: no summary.json" in result.out


def test_table3_rows_by_res5_dilation(tmp_path):
    for i, (layers, dilation, miou) in enumerate([(0, 4, 0.72), (0, 6, 0.73), (0, 8, 0.725), (3, None, 0.75)]):
        write_run(tmp_path, str(i), layers, 0, miou, experiment="paper_table3", dilation=dilation)
    runs, problems = read_run_dirs([tmp_path])
    table = build_table(runs, "table3", problems=problems)
    assert [(r.label, r.mean, r.paper_miou) for r in table.rows] == [
        ("atrous, dilation 4", 72.0, 73.1),
        ("atrous, dilation 6", 73.0, 73.6),
        ("atrous, dilation 8", 72.5, 73.2),
        ("deformable res5a,b,c", 75.0, 75.3),
    ]
    assert not table.missing_rows and not table.problems


def test_a_dataset_the_paper_lacks_compares_gains(tmp_path):
    write_run(tmp_path, "a", 0, 0, 0.40, dataset="synthetic", experiment="demo")
    write_run(tmp_path, "b", 3, 0, 0.46, dataset="synthetic", experiment="demo")
    runs, _ = read_run_dirs([tmp_path])
    table = build_table(runs, "table1", rows=[0, 3])
    assert table.paper_dataset == "voc_aug" and table.compares_gains
    dcn = table.rows[1]
    assert table.gain(dcn) == pytest.approx(6.0) and table.paper_gain(dcn) == pytest.approx(75.2 - 69.7)
    assert table.difference(dcn) == pytest.approx(6.0 - 5.5)
    assert "compares our gain" in to_markdown(table)


def test_same_seed_gains_pair_runs_by_seed(tmp_path):
    # seeds 0-2 in both rows; seed 3 only in the deformable row and seed 4 twice in it: neither pairs
    runs = [(0, 0, 0.30), (0, 1, 0.25), (0, 2, 0.28), (3, 0, 0.32), (3, 1, 0.26), (3, 2, 0.27), (3, 3, 0.40)]
    runs += [(3, 4, 0.31), (0, 4, 0.30), (3, 4, 0.33)]
    for i, (layers, seed, miou) in enumerate(runs):
        write_run(tmp_path, str(i), layers, seed, miou, dataset="synthetic", experiment="demo")
    result = table_cli(tmp_path, "--rows", "0,3")
    assert result.code == 0, result.err
    gains = [2.0, 1.0, -1.0]  # (32 - 30, 26 - 25, 27 - 28) for seeds 0, 1, 2
    mean, std = statistics.fmean(gains), statistics.stdev(gains)
    line = next(x for x in result.out.splitlines() if x.startswith("- same-seed gain, res5a,b,c:"))
    assert f"{mean:+.1f} +- {std:.1f} over 3 seeds, 2 of 3 positive" in line
    assert "+2.0 (seed 0), +1.0 (seed 1), -1.0 (seed 2)" in line and "seed 3" not in line and "seed 4" not in line
    assert "same-seed gain, none" not in result.out  # the first row is the reference
    rows = list(csv.DictReader(io.StringIO((tmp_path / "ablation_table1.csv").read_text())))
    assert rows[0]["seed_gain_mean"] == "" and rows[1]["seed_gain_seeds"] == "0 1 2"
    assert float(rows[1]["seed_gain_mean"]) == pytest.approx(mean, abs=1e-4)
    assert float(rows[1]["seed_gain_std"]) == pytest.approx(std, abs=1e-4)


class FakeWandbRun(SimpleNamespace):
    pass


class FakeApi:
    """wandb.Api's runs(path, filters) as segdcn uses it: runs with id, name, state, config and summary."""

    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return [r for r in self._runs if r.group == filters["group"]]


def test_wandb_runs_take_the_same_path_as_directories(tmp_path):
    def wandb_run(i, layers, seed, miou, group="sweep-a"):
        config = {  # segdcn logs the whole resolved config, nested
            "experiment": "paper_voc",
            "dataset": {"name": "voc_aug", "root": "/data/voc"},
            "model": {"backbone": {"name": "resnet101", "output_stride": 16, "res5_dilation": None},
                      "dcn": {"layers": layers, "at": [], "modulated": False}},
            "seed": seed,
            "trainer": {"max_iters": 30000, "batch_size": 8},
            "optim": {"lr": 0.001},
        }  # fmt: skip
        return FakeWandbRun(
            id=f"id{i}", name=f"model.dcn.layers={layers},seed={seed}", state="finished", group=group,
            config=config, summary={"miou": miou, "best_miou": miou},
        )  # fmt: skip

    api = FakeApi([wandb_run(0, 0, 0, 0.70), wandb_run(1, 3, 0, 0.75), wandb_run(2, 3, 0, 0.10, group="other")])
    runs, problems = runs_from_wandb("team/segdcn", "sweep-a", api=api)
    assert api.calls == [("team/segdcn", {"group": "sweep-a"})] and not problems
    from_wandb = build_table(runs, "table1", rows=[0, 3])

    for i, (layers, miou) in enumerate([(0, 0.70), (3, 0.75)]):
        write_run(tmp_path, str(i), layers, 0, miou)
    from_dirs = build_table(read_run_dirs([tmp_path])[0], "table1", rows=[0, 3])
    assert to_csv(from_wandb) == to_csv(from_dirs)
    assert runs[0].name == "team/segdcn/id0 (model.dcn.layers=0,seed=0)"

    with pytest.raises(ValueError, match="ENTITY/PROJECT"):
        runs_from_wandb("segdcn", "sweep-a", api=api)
    assert runs_from_wandb("team/segdcn", "nothing", api=api)[1] == ["W&B team/segdcn: no runs in group 'nothing'"]


def test_cli_errors_name_what_is_expected(tmp_path):
    assert "no summary.json" in table_cli(tmp_path).err
    both = table_cli(tmp_path, "--wandb", "team/segdcn", "--group", "g")
    assert both.code == 2 and "takes --group G and no directories" in both.err


def test_the_docs_tables_come_from_the_data_file():
    from segdcn.paper.__main__ import markdown

    text = markdown()
    assert "| res5a,b,c + res4b20,b21,b22 | 74.8 | 75.1 |" in text and "| atrous, dilation 8 | 73.2 | 72.4 |" in text
    assert "| DeepLab | 46.0M | 0.084 | 0.610 |" in text


# A Hydra sweep of the real training app's config and logger, without the training: each job logs an mIoU
# of 0.3 + 0.1 * model.dcn.layers to summary.json and an offline W&B run, as segdcn-train's jobs do.
SWEEP_APP = """
import hydra
from hydra.core.hydra_config import HydraConfig
import segdcn.config  # the schemas, registered with Hydra
from segdcn.loggers import build_logger

@hydra.main(config_path={conf!r}, config_name="train", version_base=None)
def main(cfg):
    with build_logger(cfg, HydraConfig.get().runtime.output_dir) as logger:
        logger.log_summary({{"miou": 0.3 + 0.1 * cfg.model.dcn.layers}})

main()
"""


def test_log_wandb_puts_the_table_in_the_sweeps_group(tmp_path, wandb_env):
    from tests.helpers import ROOT
    from tests.wandb_records import config_values, history_rows, read_records, run_record

    app = tmp_path / "app.py"
    app.write_text(SWEEP_APP.format(conf=str(ROOT / "conf")))
    sweep = tmp_path / "2026-12-01" / "10-00-00"
    result = run_python(str(app), "-m", "model.dcn.layers=0,1", "seed=0,1", f"hydra.sweep.dir={sweep}", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = sweep.glob("0/wandb/offline-run-*/run-*.wandb")
    training_group = run_record(read_records(job)).run_group
    assert training_group == "2026-12-01_10-00-00"  # what the sweep's jobs share

    table = table_cli(sweep, "--log-wandb")
    assert table.code == 0, table.err
    assert "upload it with: wandb sync" in table.out
    (path,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    records = read_records(path)
    run = run_record(records)
    assert (run.run_group, run.job_type, run.project) == (training_group, "ablation", "segdcn")
    assert config_values(records)["table"] == "table1"
    (row,) = history_rows(records)
    assert row["ablation/table1/_type"] == "table-file" and row["ablation/table1_plot/_type"] == "image-file"
    files = path.parent / "files"
    assert (files / row["ablation/table1_plot/path"]).is_file()
    logged = json.loads((files / row["ablation/table1/path"]).read_text())
    columns, rows = logged["columns"], {r[logged["columns"].index("row")]: r for r in logged["data"]}
    assert columns[:4] == ["table", "dataset", "experiment", "row"]
    res5c = dict(zip(columns, rows["res5c"], strict=True))
    assert res5c["seeds"] == "0 1" and res5c["miou_mean"] == pytest.approx(40.0)  # our mIoU, in %
    assert res5c["gain"] == pytest.approx(10.0) and res5c["seed_gain_mean"] == pytest.approx(10.0)
    assert (res5c["paper_miou"], res5c["paper_gain"]) == (73.9, pytest.approx(4.2))  # the paper's VOC numbers

    refused = table_cli(sweep, "--group", "mine")  # a group for no W&B run would be ignored
    assert refused.code == 2 and "--group G goes with --wandb" in refused.err
