"""The collector settings of a sweeping process (janitor.gc_tuning)."""

from __future__ import annotations

import gc
import json
from datetime import timedelta
from pathlib import Path

from janitor import gc_tuning
from janitor.sim.jupyter import JupyterSim
from tests.conftest import invoke, jupyter_toml


def test_tuning_freezes_start_up_objects_and_sets_the_thresholds() -> None:
    assert gc.get_threshold() != gc_tuning.THRESHOLDS
    gc_tuning.tune_for_sweeping()
    assert gc.get_threshold() == gc_tuning.THRESHOLDS
    assert gc.get_freeze_count() > 0  # conftest's _restore_gc undoes both


def test_janitor_sweep_tunes_the_collector_before_it_sweeps(tmp_path: Path) -> None:
    sim = JupyterSim(token="test-token")
    sim.add_session("old.ipynb", idle_for=timedelta(hours=3))
    server = sim.serve()
    try:
        config = tmp_path / "janitor.toml"
        config.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", server.url + "/"))
        result = invoke("-c", str(config), "sweep", "--dry-run", "-o", "json")
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["targets"][0]["target"]
    assert gc.get_threshold() == gc_tuning.THRESHOLDS
