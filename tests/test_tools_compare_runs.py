"""tools/compare_runs.py: paired comparison of ``mmar eval --per-clip`` outputs (the floor is
measured on the Bandai data, tested where the data is)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[1] / "tools" / "compare_runs.py"
_spec = importlib.util.spec_from_file_location("compare_runs", _PATH)
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def _eval_json(path: Path, values: dict) -> str:
    path.write_text(json.dumps({"all": {}, "per_clip": {n: {"mpjpe_cm": v, "jitter_m_s3": 100 * v}
                                                       for n, v in values.items()}}))
    return str(path)


def test_compares_each_evaluation_with_the_first_per_group(tmp_path, capsys):
    rng = np.random.default_rng(0)
    names = [f"dataset-1_{i}" for i in range(6)] + [f"dataset-2_{i}" for i in range(30)]
    base = {n: float(rng.uniform(1, 5)) for n in names}
    a = _eval_json(tmp_path / "a.json", base)
    b = _eval_json(tmp_path / "b.json", {n: v - 0.5 for n, v in base.items()})
    out = tmp_path / "t.md"
    rc = compare_runs.main([f"A={a}", f"B model={b}", "--metric", "mpjpe_cm", "--metric", "jitter_m_s3",
                            "--resamples", "500", "--out", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "| B model vs A | all | mpjpe_cm | 36 |" in table and "| B model vs A | dataset-1 | mpjpe_cm | 6 |" in table
    assert "| -0.50 | [-0.50, -0.50] | 100% |" in table
    rows = json.loads(out.with_suffix(".json").read_text())
    assert len(rows) == 4 and {r["group"] for r in rows} == {"all", "dataset-1"}
    assert out.read_text().strip() == table.strip()


def test_says_what_is_wrong_with_its_inputs(tmp_path, capsys):
    good = _eval_json(tmp_path / "a.json", {"x": 1.0, "y": 2.0})
    other = _eval_json(tmp_path / "b.json", {"x": 1.0})
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"all": {"mpjpe_cm": 1.0}}))
    assert compare_runs.main([f"A={good}", f"B={plain}"]) == 2
    assert "--per-clip" in capsys.readouterr().err
    assert compare_runs.main([f"A={good}", f"B={other}"]) == 2
    assert "different clips" in capsys.readouterr().err
    assert compare_runs.main([f"A={good}", f"B={tmp_path / 'missing.json'}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert compare_runs.main([f"A={good}", good]) == 2
    assert "LABEL=FILE" in capsys.readouterr().err


def test_the_floor_is_measured_per_clip_of_the_split():
    from _sparse_body_fixtures import synthetic_benchmark

    from mmar.eval.report import group_averages

    bench = synthetic_benchmark()
    per_clip = compare_runs.floor_per_clip(bench, "test", stride=2)
    assert sorted(per_clip) == sorted(bench["test"])
    m = group_averages(per_clip)["all"]
    assert m["clips"] == len(bench["test"]) and 0 < m["mpjpe_cm"] < 100
