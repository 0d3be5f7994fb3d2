"""experiments/hdm05_ood.py: its ``--run`` options, labels and per-action grouping (the whole
evaluation reads the shared data and trained runs; its figures are in docs/results.md)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "hdm05_ood.py"
_spec = importlib.util.spec_from_file_location("hdm05_ood", _PATH)
hdm05_ood = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hdm05_ood)


def test_a_plain_run_is_evaluated_as_trained():
    spec = hdm05_ood.parse_run("/tmp/runs/agrol")
    assert spec == {"path": "/tmp/runs/agrol", "ema": False, "step": None, "overrides": [], "label": None}
    assert hdm05_ood.run_label(spec, "agrol_mlp", "/tmp/runs/agrol", 8000) == "agrol_mlp (agrol, step 8000)"


def test_a_run_takes_the_options_of_mmar_eval():
    spec = hdm05_ood.parse_run("'/tmp/my runs/mem' --ema --step 4000 --set model.ik=true --set model.ik_iters=5")
    assert spec["path"] == "/tmp/my runs/mem" and spec["ema"] and spec["step"] == 4000
    assert spec["overrides"] == ["model.ik=true", "model.ik_iters=5"]
    assert (hdm05_ood.run_label(spec, "mem_mlp", spec["path"], 4000)
            == "mem_mlp (mem, step 4000, EMA, model.ik=true, model.ik_iters=5)")
    for label in ("--label 'Mem-MLP preset, EMA + IK'", "--label Mem-MLP preset, EMA + IK"):
        named = hdm05_ood.parse_run(f"/tmp/runs/mem --ema {label} --set model.ik=true")
        assert named["ema"] and named["overrides"] == ["model.ik=true"]
        assert hdm05_ood.run_label(named, "mem_mlp", "/tmp/runs/mem", 5000) == "Mem-MLP preset, EMA + IK"


@pytest.mark.parametrize("bad, says", [("/tmp/r --emma", "unrecognized arguments: --emma"),
                                       ("/tmp/r --step four", "invalid int value"),
                                       ("/tmp/r --set model.ik", "is not key=value"),
                                       ("", "required: path")])
def test_a_bad_run_option_names_the_run_and_the_problem(bad, says):
    with pytest.raises(SystemExit) as e:
        hdm05_ood.parse_run(bad)
    assert says in str(e.value) and repr(bad) in str(e.value)


def test_clips_are_grouped_by_hdm05_action():
    names = ["HDM_bk_squat1Reps_001_120", "HDM_bk_squat1Reps_002_120", "HDM_bk_grabHighR_001_120", "odd_name"]
    assert hdm05_ood.action_of(names[0]) == "squat1Reps" and hdm05_ood.action_of("odd_name") == "other"
    groups = hdm05_ood.groups_for(names)
    assert list(groups) == ["all", "grabHighR", "other", "squat1Reps"]
    assert [n for n in names if groups["squat1Reps"](n)] == names[:2]
    assert all(groups["all"](n) for n in names)


def test_the_per_action_table_has_a_row_per_action_and_four_columns_per_model():
    row = {"mpjpe_cm": 10.0, "mpjre_deg": 5.0, "hand_pe_cm": 12.0, "jitter_m_s3": 300.0, "clips": 2,
           "gt_jitter_m_s3": 90.0}
    rows = {"floor": {"all": row, "squat1Reps": row}, "model": {"all": row, "squat1Reps": row}}
    table = hdm05_ood.per_action_table(rows).splitlines()
    assert len(table) == 4 and table[0].count("|") == 2 + 1 + 8 + 1
    assert table[2].startswith("| **all HDM05** | 2 | 10.00 | 5.00 | 12.00 | 300 | 10.00")
    assert table[3].startswith("| squat (`squat1Reps`) | 2 |") and table[3].endswith("| 90 |")
