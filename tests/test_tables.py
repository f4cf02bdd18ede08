"""Study tables from metrics.json records: gaps, missing cells, the three formats."""

from __future__ import annotations

import json

import pytest

from frozenbench.reporting.tables import build_tables, head_capacity_table, paper_table, pretraining_table


def record(task, backbone, mode, metrics, head="h", extra="0", pretrain="supervised", size="tiny"):
    return {
        "task": task,
        "backbone": backbone,
        "mode": mode,
        "head": head,
        "metrics": metrics,
        "pretrain_objective": pretrain,
        "family_size": size,
        "extra_blocks": extra,
    }


RECORDS = [
    record("ade", "t_sup", "frozen", {"mIoU": 50.0}),
    record("ade", "t_sup", "finetune", {"mIoU": 56.5}),
    record("ade", "t_rand", "frozen", {"mIoU": 40.0}, pretrain="random"),
    record("coco", "t_sup", "frozen", {"bbox": {"AP": 20.0}, "segm": {"AP": 18.0}}),
    record("ade", "t_sup", "frozen", {"mIoU": 53.0}, head="h2", extra="2"),
]


def test_pretraining_table_has_gaps_and_shows_missing_cells_as_missing():
    table = pretraining_table(RECORDS)
    assert table.header[:5] == [
        "backbone",
        "pretraining",
        "coco box AP frozen",
        "coco box AP fine-tuned",
        "coco box AP gap",
    ]
    rows = {row[0]: row for row in table.rows}
    ade_at = table.header.index("ade mIoU frozen")
    assert rows["t_sup"][ade_at : ade_at + 3] == [50.0, 56.5, -6.5]
    assert rows["t_rand"][ade_at : ade_at + 3] == [40.0, None, None]  # not run: missing, not zero
    assert rows["t_rand"][1] == "random"


def test_head_capacity_rows_per_extra_blocks():
    table = head_capacity_table(RECORDS)
    rows = {(r[0], r[1], r[2]): r for r in table.rows}
    assert table.header[:4] == ["backbone", "task", "head", "capacity"]
    assert rows[("t_sup", "ade", "h2")][table.header.index("ade mIoU")] == 53.0
    assert rows[("t_sup", "ade", "h")][table.header.index("ade mIoU")] == 50.0
    assert ("t_rand", "ade", "h") not in rows  # one head only: no capacity comparison


def test_every_capacity_knob_and_the_chosen_head_show():
    """A temporal-block variant and a Mask R-CNN cell beside HTC were dropped by the old tables."""
    records = [
        {**record("k400", "l", "frozen", {"top1": 60.0}, head="temporal_b2"), "capacity": "num_blocks=2"},
        {**record("k400", "l", "frozen", {"top1": 62.0}, head="temporal_b4"), "capacity": "num_blocks=4"},
        record("coco", "l", "frozen", {"bbox": {"AP": 30.0}, "segm": {"AP": 25.0}}, head="mrcnn_fpn"),
        record("coco", "l", "finetune", {"bbox": {"AP": 35.0}, "segm": {"AP": 28.0}}, head="mrcnn_fpn"),
        record("coco", "l", "frozen", {"bbox": {"AP": 33.0}, "segm": {"AP": 27.0}}, head="htc"),
    ]
    capacity = {(r[1], r[2]): r for r in head_capacity_table(records).rows}
    assert capacity[("k400", "temporal_b4")][3] == "num_blocks=4"
    assert ("coco", "htc") in capacity and ("coco", "mrcnn_fpn") in capacity
    heads = {"coco": "mrcnn_fpn", "k400": "temporal_b2"}
    table = pretraining_table(records, heads)
    row = table.rows[0]
    assert row[table.header.index("coco box AP frozen") :][:3] == [30.0, 35.0, -5.0]
    assert "coco: mrcnn_fpn" in table.caption
    # without a choice the alphabetically first head (htc) has no fine-tuned cell: the gap is lost
    assert pretraining_table(records).rows[0][table.header.index("coco box AP gap")] is None


def test_planned_cells_show_as_missing_and_the_paper_table_names_its_backbone(tmp_path):
    from frozenbench.tasks.registry import get_task_type

    capacity_label = get_task_type("segmentation").capacity_label

    plan = {
        "cells": [
            {
                "task": "ade",
                "backbone": "swinv2_large_in22k",
                "mode": "frozen",
                "head": "m2f_b4",
                "family_size": "large",
                "arch": "swinv2_large",
                "pretrain_objective": "supervised",
                "extra_blocks": "0",
                "capacity": capacity_label({"transformer_decoder_layers": 4}),
            },
            {
                "task": "ade",
                "backbone": "swin_tiny_in1k",
                "mode": "frozen",
                "head": "m2f_b4",
                "family_size": "tiny",
                "arch": "swin_tiny",
                "pretrain_objective": "supervised",
                "extra_blocks": "0",
                "capacity": "",
            },
        ],
        "heads": {"ade": "m2f_b4"},
    }
    tables = {t.name: t for t in build_tables([], tmp_path, plan)}
    assert {r[0] for r in tables["pretraining"].rows} == {"swinv2_large_in22k", "swin_tiny_in1k"}
    assert all(v is None for r in tables["pretraining"].rows for v in r[2:])
    assert "Ours (swinv2_large_in22k," in tables["paper"].caption and "SwinV2-G" in tables["paper"].caption
    assert json.loads((tmp_path / "summary.json").read_text()) == {}
    assert capacity_label({"transformer_decoder_layers": 4}) == "extra_blocks=0 transformer_decoder_layers=4"


def _paper_row(table, task, label, mode, split):
    row = next(r for r in table.rows if r[:4] == [task, label, mode, split])
    return dict(zip(table.header, row))


def test_paper_table_compares_the_largest_backbone_run_with_the_published_numbers():
    records = RECORDS + [record("coco", "s_sup", "frozen", {"bbox": {"AP": 25.0}, "segm": {"AP": 22.0}}, size="small")]
    table = paper_table(records)
    assert "Ours (s_sup" in table.caption
    # generated data (no datasets.<name>.benchmark): side by side, no delta column at all
    assert "delta" not in table.header and "not the paper's benchmarks" in table.caption
    val = _paper_row(table, "coco", "box AP", "frozen", "val")
    assert (
        val["published"] == 59.3 and val["ours"] == 25.0 and val["published by"] == "HTC++, SwinV2-G (Lin et al. 2022)"
    )
    assert _paper_row(table, "coco", "box AP", "frozen", "test-dev")["ours"] == "not scored"  # val is not test-dev
    assert _paper_row(table, "coco", "box AP", "finetune", "val")["published by"].endswith("(Liu et al. 2022 (SwinV2))")
    assert _paper_row(table, "k400", "top-1", "finetune", "val")["ours"] is None  # not run: missing
    assert _paper_row(paper_table(records, backbone="t_sup"), "coco", "box AP", "frozen", "val")["ours"] == 20.0
    # a randomly initialised backbone of the same (or a larger) size is the floor, not the comparison
    floor = record(
        "coco", "v_rand", "frozen", {"bbox": {"AP": 1.0}, "segm": {"AP": 1.0}}, pretrain="random", size="large"
    )
    assert "Ours (s_sup" in paper_table(records + [floor]).caption
    assert "Ours (v_rand" in paper_table([floor]).caption  # nothing else ran


def test_the_paper_table_pairs_like_with_like_and_gives_a_delta_only_on_the_benchmark():
    def coco(head, kind, box, benchmark="coco2017"):
        metrics = {"bbox": {"AP": box}, "segm": {"AP": box - 5}}
        return {**record("coco", "l", "frozen", metrics, head=head, size="large"), "head_kind": kind,
                "benchmark": benchmark, "arch": "swinv2_large"}  # fmt: skip

    records = [coco("mrcnn", "mask_rcnn", 50.0), coco("htc", "htc", 55.0)]
    table = paper_table(records, heads={"coco": "mrcnn"})
    val = _paper_row(table, "coco", "box AP", "frozen", "val")
    # the HTC cell is set beside the paper's HTC++, not the table's Mask R-CNN head
    assert val["our head"] == "htc" and val["ours"] == 55.0 and val["delta"] == pytest.approx(55.0 - 59.3)
    assert (
        val["differs"]
        == "backbone swinv2_large vs SwinV2-G; head htc vs HTC++ (no '++': single-scale, no semantic branch)"
    )
    assert _paper_row(table, "coco", "box AP", "frozen", "test-dev")["delta"] is None  # not scored: nothing to subtract
    only_mrcnn = _paper_row(paper_table(records[:1]), "coco", "box AP", "frozen", "val")
    assert only_mrcnn["ours"] == 50.0 and "head mask_rcnn vs HTC++" in only_mrcnn["differs"]
    elsewhere = paper_table([coco("htc", "htc", 55.0, benchmark="")])  # the same cell on other data
    assert "delta" not in elsewhere.header


def test_three_formats_are_written(tmp_path):
    paths = []
    for i, r in enumerate(RECORDS):
        path = tmp_path / "results" / r["task"] / r["backbone"] / r["mode"] / r["head"] / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
        paths.append(path)
    build_tables(paths, tmp_path / "tables")
    md = (tmp_path / "tables" / "pretraining.md").read_text()
    assert "| t_rand | random |" in md and "–" in md
    tex = (tmp_path / "tables" / "pretraining.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "t\\_sup" in tex
    csv_text = (tmp_path / "tables" / "paper.csv").read_text().splitlines()
    assert csv_text[0] == "task,metric,mode,split,published,published by,ours,our head,differs"
    assert csv_text[1].startswith('coco,box AP,frozen,val,59.3,"HTC++, SwinV2-G (Lin et al. 2022)",20.0,h,')


def test_no_results_yet_gives_tables_of_missing_cells(tmp_path):
    from .conftest import run_cmd

    run_cmd(["frozenbench", "tables", "--out", str(tmp_path)], check=True, timeout=120)
    paper = (tmp_path / "paper.md").read_text()
    row = "| coco | box AP | frozen | test-dev | 60.0 | HTC++, SwinV2-G (Lin et al. 2022) | – | – |"
    assert f"{row} no such cell in the study |" in paper


def test_figures_are_deterministic_pngs_even_for_an_empty_study(tmp_path):
    from frozenbench.reporting.figures import FIGURE_NAMES, build_figures

    records = RECORDS + [
        record("ade", "s_sup", "frozen", {"mIoU": 58.0}, size="small"),
        record("ade", "s_sup", "finetune", {"mIoU": 60.0}, size="small"),
    ]
    records[0] = {**records[0], "train_curve": [[10, 3.0], [20, 2.1], [30, 1.7]]}
    first = build_figures(records, tmp_path / "a")
    second = build_figures(records, tmp_path / "b")
    empty = build_figures([], tmp_path / "empty")
    assert [p.name for p in first] == [f"{n}.png" for n in FIGURE_NAMES]
    for a, b, e in zip(first, second, empty):
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and e.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != e.read_bytes()  # the data is drawn


def test_html_report_embeds_tables_figures_and_probes(tmp_path):
    import pytest

    from frozenbench.errors import UserError
    from frozenbench.reporting.figures import build_figures
    from frozenbench.reporting.html import build_report

    build_tables(RECORDS, tmp_path)
    build_figures(RECORDS, tmp_path)
    probe = tmp_path / "probe.md"
    probe.write_text("Probes.\n\n| backbone | k-NN |\n| --- | ---: |\n| t_sup | 89.2 |\n")
    build_report(tmp_path, tmp_path / "report.html", probe)
    page = (tmp_path / "report.html").read_text()
    assert "Frozen vs fine-tuned by pretraining objective" in page and "<td>-6.5</td>" in page
    assert page.count("data:image/png;base64,") == 3 and "<td>89.2</td>" in page
    assert "<td>–</td>" in page  # a cell not run
    with pytest.raises(UserError, match="no tables"):
        build_report(tmp_path / "nothing", tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_cells_are_found_by_task_type_so_a_task_under_a_new_name_shows_everywhere(tmp_path):
    from frozenbench.errors import UserError
    from frozenbench.reporting.tables import TABLE_NAMES, summary

    coco_3x = {
        **record("coco_3x", "t_sup", "frozen", {"bbox": {"AP": 25.0}, "segm": {"AP": 22.0}}),
        "task_type": "detection",
    }
    records = RECORDS + [coco_3x]
    table = pretraining_table(records)
    assert "coco_3x box AP frozen" in table.header and "coco box AP frozen" in table.header
    assert {row[0]: row for row in table.rows}["t_sup"][table.header.index("coco_3x mask AP frozen")] == 22.0
    assert _paper_row(paper_table(records, backbone="t_sup"), "coco_3x", "box AP", "frozen", "val")["ours"] == 25.0
    assert summary([coco_3x]) == {"coco_3x/t_sup/frozen/h": {"box AP": 25.0, "mask AP": 22.0}}
    tables = build_tables(records, tmp_path)
    assert [t.name for t in tables] == list(TABLE_NAMES)
    assert "coco_3x/t_sup/frozen/h" in json.loads((tmp_path / "summary.json").read_text())
    # a record of an unknown task name that carries no type cannot be placed: a clear error, not a silent gap
    with pytest.raises(UserError, match="task 'lvis' names no task type"):
        pretraining_table(RECORDS + [record("lvis", "t_sup", "frozen", {"bbox": {"AP": 1.0}})])


def test_training_curves_are_written_as_data_that_dvc_plots_renders(tmp_path):
    import yaml

    from frozenbench.reporting.figures import CURVES_FOLDER, build_figures

    from .conftest import REPO, VENV_BIN, run_cmd

    curve = [[1, 3.0], [2, 2.5], [3, 2.0]]
    records = [{**RECORDS[0], "train_curve": curve}, RECORDS[1]]
    project = tmp_path / "project"
    build_figures(records, project / "tables")
    folder = project / "tables" / CURVES_FOLDER
    assert [p.name for p in folder.iterdir()] == ["ade__t_sup__frozen__h.csv"]
    assert (folder / "ade__t_sup__frozen__h.csv").read_text() == "step,loss\n1,3.0\n2,2.5\n3,2.0\n"
    # a cell gone from the results leaves no stale curve behind
    build_figures([{**RECORDS[2], "train_curve": curve}], project / "tables")
    assert [p.name for p in folder.iterdir()] == ["ade__t_rand__frozen__h.csv"]
    # the repository's plots declaration, read by DVC itself
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (project / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    run_cmd([str(VENV_BIN / "dvc"), "init", "--no-scm", "-q"], cwd=project, check=True)
    shown = run_cmd([str(VENV_BIN / "dvc"), "plots", "show", "--json"], cwd=project, check=True).stdout
    (plot,) = json.loads(shown)["data"]["tables/curves/ade__t_rand__frozen__h.csv"]
    values = plot["content"]["data"]["values"]
    assert [(float(v["step"]), float(v["loss"])) for v in values] == [(1.0, 3.0), (2.0, 2.5), (3.0, 2.0)]
    assert plot["content"]["encoding"]["x"]["field"] == "step"


def _with_replicates(task, backbone, mode, value, replicates, seed=0, head="h"):
    """A segmentation record whose evaluation recorded bootstrap replicates (issue 29)."""
    entry = {"n": 80, "seed": 0, "replicates": list(replicates)}
    rec = record(task, backbone, mode, {"mIoU": value, "bootstrap": {"mIoU": entry}}, head=head)
    return {**rec, "seed": seed, "task_type": "segmentation"}


def test_cells_show_mean_and_interval_over_seeds_and_gaps_are_findings_only_beyond_noise(tmp_path):
    import numpy as np

    from frozenbench.evaluation import bootstrap

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.0, bootstrap.REPLICATES)  # one split: the same resamples in every cell
    records = [
        _with_replicates("ade", "a", "frozen", 50.0, 50.0 + noise, seed=0),
        _with_replicates("ade", "a", "frozen", 51.0, 51.0 + noise, seed=1),
        _with_replicates("ade", "a", "finetune", 56.0, 56.0 + noise, seed=0),
        _with_replicates("ade", "b", "frozen", 50.2, 50.2 + noise, seed=0),
        _with_replicates("ade", "b", "finetune", 50.0, 50.0 + rng.normal(0, 1.0, bootstrap.REPLICATES), seed=0),
    ]
    table = pretraining_table(records)
    rows = {row[0]: row for row in table.rows}
    at = table.header.index("ade mIoU frozen")
    frozen, finetuned, gap = rows["a"][at : at + 3]
    assert float(frozen) == 50.5 and frozen.interval.seeds == 2 and frozen.per_seed == {0: 50.0, 1: 51.0}
    assert frozen.interval.low < 50.5 < frozen.interval.high
    assert float(gap) == pytest.approx(-5.5) and gap.finding  # 5.5 points on a 1-point noise: a finding
    near_gap = rows["b"][at + 2]
    assert float(near_gap) == pytest.approx(0.2) and not near_gap.finding  # within noise: no mark

    tables = build_tables(records, tmp_path)
    markdown = (tmp_path / "pretraining.md").read_text()
    assert f"{gap.interval.describe()}*" in markdown and "50.5 [" in markdown
    assert "n = 80 evaluation samples, 1-2 seed(s) per cell" in markdown
    header = (tmp_path / "pretraining.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("ade mIoU frozen") + 1 : header.index("ade mIoU frozen") + 3] == [
        "ade mIoU frozen low",
        "ade mIoU frozen high",
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    cell = summary["ade/a/frozen/h"]
    assert cell["mIoU"] == 50.5 and cell["mIoU_interval"]["per_seed"] == {"0": 50.0, "1": 51.0}
    assert cell["mIoU_interval"]["seeds"] == 2 and cell["mIoU_interval"]["n"] == 80
    assert tables[0].name == "pretraining"


def test_findings_read_the_papers_three_questions_with_intervals(tmp_path):
    import numpy as np

    from frozenbench.evaluation import bootstrap
    from frozenbench.reporting.tables import findings_table

    rng = np.random.default_rng(1)
    shared = rng.normal(0, 1.0, bootstrap.REPLICATES)  # one split: every cell's resamples move alike

    def cell(backbone, mode, value, head="h", pretrain="supervised", size="tiny", extra="0", jitter=0.0):
        noise = shared + rng.normal(0, jitter, bootstrap.REPLICATES)
        rec = _with_replicates("ade", backbone, mode, value, value + noise, head=head)
        return {**rec, "pretrain_objective": pretrain, "family_size": size, "extra_blocks": extra, "arch": size}

    records = [
        cell("t_sup", "frozen", 50.0),
        cell("t_sup", "finetune", 56.0),
        cell("t_mim", "frozen", 40.0, pretrain="mim"),  # MIM far behind frozen: the paper's direction
        cell("t_con", "frozen", 50.2, pretrain="contrastive", jitter=3.0),  # the paper states no direction
        cell("t_sup", "frozen", 53.0, head="h_extra", extra="2"),  # more capacity helps
        cell("l_sup", "frozen", 58.0, size="large"),
        cell("l_sup", "finetune", 60.0, size="large"),  # the gap closes from -6 to -2
        cell("l_sup", "frozen", 58.1, head="h_extra", extra="2", size="large", jitter=2.0),  # within noise
    ]
    table = findings_table(records, {"ade": "h"})
    rows = {(r[0], r[3]): dict(zip(table.header, r)) for r in table.rows}
    mim = rows[("1 pretraining", "mim - supervised (t_mim - t_sup), frozen")]
    assert float(mim["difference"]) == pytest.approx(-10.0) and mim["paper"] == "-" and mim["verdict"] == "reproduces"
    assert rows[("1 pretraining", "contrastive - supervised (t_con - t_sup), frozen")]["verdict"] == "paper states none"
    assert rows[("2 head capacity", "h_extra - h on t_sup, frozen")]["verdict"] == "reproduces"
    assert rows[("2 head capacity", "h_extra - h on l_sup, frozen")]["verdict"] == "within noise"
    size = rows[("3 model size", "gap(frozen - fine-tuned) of l_sup - gap of t_sup (supervised)")]
    assert float(size["difference"]) == pytest.approx(4.0) and size["verdict"] == "reproduces"
    # the same comparisons the other way round read as opposite to the paper
    flipped = [{**r, "metrics": {**r["metrics"], "mIoU": 100 - r["metrics"]["mIoU"]}} for r in records]
    for r, original in zip(flipped, records):
        entry = original["metrics"]["bootstrap"]["mIoU"]
        r["metrics"]["bootstrap"] = {"mIoU": {**entry, "replicates": [100 - v for v in entry["replicates"]]}}
    verdicts = {(row[0], row[3]): row[6] for row in findings_table(flipped, {"ade": "h"}).rows}
    assert verdicts[("1 pretraining", "mim - supervised (t_mim - t_sup), frozen")] == "opposite"
    build_tables(records, tmp_path, {"heads": {"ade": "h"}})
    assert "| 1 pretraining | ade | mIoU | mim - supervised" in (tmp_path / "findings.md").read_text()


def test_figures_draw_the_intervals_where_the_cells_have_them(tmp_path):
    import numpy as np

    from frozenbench.evaluation import bootstrap
    from frozenbench.reporting.figures import gap_vs_size, pretraining_scores

    noise = np.random.default_rng(2).normal(0, 2.0, bootstrap.REPLICATES)
    with_intervals = [
        _with_replicates("ade", "a", "frozen", 50.0, 50.0 + noise),
        _with_replicates("ade", "a", "finetune", 55.0, 55.0 + noise[::-1]),
    ]
    plain = [{**r, "metrics": {"mIoU": r["metrics"]["mIoU"]}} for r in with_intervals]
    for name, draw in (("gap", gap_vs_size), ("scores", pretraining_scores)):
        draw(with_intervals, tmp_path / f"{name}_ci.png")
        draw(plain, tmp_path / f"{name}_plain.png")
        assert (tmp_path / f"{name}_ci.png").read_bytes() != (tmp_path / f"{name}_plain.png").read_bytes()


def test_a_test_dev_row_shows_the_servers_score_once_it_is_written_beside_the_run(tmp_path):
    from frozenbench.errors import UserError
    from frozenbench.reporting.tables import load_results

    metrics = {"bbox": {"AP": 55.0}, "segm": {"AP": 48.0}}
    rec = {**record("coco", "l", "frozen", metrics, head="htc", size="large"), "head_kind": "htc",
           "benchmark": "coco2017", "task_type": "detection", "seed": 0}  # fmt: skip
    run = tmp_path / "results" / "coco" / "l" / "frozen" / "htc" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(rec))
    unscored = _paper_row(paper_table(load_results(tmp_path / "results")), "coco", "box AP", "frozen", "test-dev")
    assert unscored["ours"] == "not scored" and unscored["delta"] is None
    (run / "test_dev_scores.json").write_text(json.dumps({"box AP": 59.0, "mask AP": 51.0}))
    table = paper_table(load_results(tmp_path / "results"))
    scored = _paper_row(table, "coco", "box AP", "frozen", "test-dev")
    assert scored["ours"] == 59.0 and scored["delta"] == pytest.approx(59.0 - 60.0)
    assert _paper_row(table, "coco", "box AP", "frozen", "val")["ours"] == 55.0  # val stays val
    (run / "test_dev_scores.json").write_text(json.dumps({"box AP": 590}))
    with pytest.raises(UserError, match=r"scores must be numbers in percent \(0-100\), got \{'box AP': 590\}"):
        load_results(tmp_path / "results")
    (run / "test_dev_scores.json").write_text(json.dumps({"bbox AP": 59.0}))
    with pytest.raises(UserError, match=r"test_dev_scores.json: expected \{label: number\} with labels among"):
        load_results(tmp_path / "results")
