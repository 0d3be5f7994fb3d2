"""experiments/sparse_cpu_presets.sh: a training stage that XLA stops at a hung collective of the
two CPU devices is resumed once on one device; any other failure stops the chain and says so
(a stand-in Python, so nothing is trained)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "sparse_cpu_presets.sh"


def _fake_python(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\necho \"$MMAR_CPU_DEVICES $*\" >> \"$CALLS\"\n" + body)
    fake.chmod(0o755)
    return fake


def _run(tmp_path, fake):
    env = {**os.environ, "PYTHON": str(fake), "CALLS": str(tmp_path / "calls.txt")}
    env.pop("MMAR_CPU_DEVICES", None)
    env.pop("BUDGET", None)
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "root"), "agrol"], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_hung_collective_resumes_once_on_one_device(tmp_path):
    fake = _fake_python(tmp_path, 'if [[ "$*" == *" train "* && -z "$MMAR_CPU_DEVICES" ]]; then\n'
                                  '  echo "F1207 rendezvous.cc:161] Termination timeout for all gather"; exit 134\nfi\n')
    r = _run(tmp_path, fake)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split(" -m mmar.cli ")[0] for c in calls] == ["", "1", ""]  # train, train on one device, eval
    assert " train configs/agrol_mlp_41_cpu.py" in calls[1] and " eval " in calls[2]
    root = tmp_path / "root"
    assert "Termination timeout" in (root / "agrol_train.collective-timeout.log").read_text()
    assert "resuming on one (MMAR_CPU_DEVICES=1)" in (root / "times.txt").read_text()


def test_another_failure_stops_the_chain_and_is_reported(tmp_path):
    fake = _fake_python(tmp_path, 'echo "ConfigError: something else"; exit 2\n')
    r = _run(tmp_path, fake)
    assert r.returncode == 2
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 1  # no retry, no evaluation
    assert "agrol_train: failed after" in r.stderr and "ConfigError: something else" in r.stderr
