"""``janitor demo``: the real daemon against a simulated Jupyter server, on this machine.

Creates a directory with a config, a token file, a SQLite database and the example policies,
starts a simulated Jupyter server on a free loopback port with a handful of sessions (idle,
busy, starting, dead, exempt, connected), and runs the daemon. Every so often a "forgotten"
notebook appears and a busy kernel does some work, so each sweep has something to show.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import random
import shutil
from datetime import timedelta
from pathlib import Path

from janitor.clock import SystemClock
from janitor.daemon import Daemon
from janitor.observability import sentry
from janitor.policy.spec import load_policy_files
from janitor.runtime import Runtime
from janitor.settings import load_config
from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Store

log = logging.getLogger("janitor.demo")
TOKEN = "demo-token"  # noqa: S105 (a loopback simulator's token, not a secret)


def populate(sim: JupyterSim) -> None:
    """The opening scene: one session of each interesting kind."""
    sim.add_session("projects/analysis.ipynb", idle_for=timedelta(hours=3))
    sim.add_session("projects/keep-report.ipynb", idle_for=timedelta(hours=5))
    sim.add_session("projects/training.ipynb", state="busy", idle_for=timedelta(hours=4))
    sim.add_session("projects/just-opened.ipynb", state="starting")
    sim.add_session("projects/dashboard.ipynb", idle_for=timedelta(hours=2), connections=1)
    sim.add_session("projects/scratch.ipynb", idle_for=timedelta(minutes=20))
    sim.add_session("console-1", idle_for=timedelta(hours=2), kind="console")
    sim.add_kernel(state="dead", idle_for=timedelta(days=1))


def write_files(directory: Path, sim_url: str, listen: str) -> Path:
    """Write the demo's config, token and policy files; return the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(TOKEN + "\n", encoding="utf-8")
    policies = directory / "policies.yaml"
    source = importlib.resources.files("janitor.sim") / "demo-policies.yaml"
    if not policies.exists():
        with importlib.resources.as_file(source) as path:
            shutil.copyfile(path, policies)
    elif policies.read_text(encoding="utf-8") != source.read_text(encoding="utf-8"):
        log.info(
            "demo: keeping your edited %s (delete it to get the demo's policies back)", policies
        )
    config = directory / "janitor.toml"
    config.write_text(
        "# written by `janitor demo`\n"
        f'database_url = "sqlite:///{(directory / "janitor.db").resolve()}"\n'
        'sweep_interval = "10s"\nsweep_jitter = "2s"\n'
        f'listen = "{listen}"\nlog_format = "text"\n\n'
        "[[targets]]\n"
        'name = "demo-notebooks"\nprovider = "jupyter"\n'
        f'base_url = "{sim_url}/"\n'
        f'token_file = "{(directory / "token").resolve()}"\n',
        encoding="utf-8",
    )
    return config


async def _churn(sim: JupyterSim, stop: asyncio.Event) -> None:
    """Keep the scene moving: forgotten notebooks appear, the busy kernel works."""
    rng = random.Random(7)  # noqa: S311 (a demo's randomness)
    count = 0
    while not stop.is_set():
        await asyncio.sleep(25)
        count += 1
        hours = rng.choice([2, 3, 6])
        sim.add_session(f"projects/forgotten-{count}.ipynb", idle_for=timedelta(hours=hours))
        log.info("demo: a notebook idle for %dh appeared (forgotten-%d.ipynb)", hours, count)
        with sim.lock:
            busy = [k for k in sim.kernels.values() if k.execution_state == "busy"]
        for kernel in busy:
            sim.touch(kernel.id)


def run_demo(directory: Path, listen: str) -> int:
    """Set everything up, then run the daemon until Ctrl-C."""
    sim = JupyterSim(token=TOKEN)
    populate(sim)
    server: SimServer = sim.serve()
    try:
        config_path = write_files(directory, server.url, listen)
        config = load_config(str(config_path))
        store = Store.open(
            config.settings.database_url.get_secret_value()  # type: ignore[union-attr]
        )
        store.db.upgrade()
        specs = load_policy_files(directory / "policies.yaml")
        store.policies.apply(specs, actor="demo", now=SystemClock().now(), source="demo")
        _banner(config_path, server.url, listen)
        return asyncio.run(_main(config, store, sim))
    finally:
        server.stop()


async def _main(config: object, store: Store, sim: JupyterSim) -> int:
    from janitor.settings import Config

    assert isinstance(config, Config)
    rt = Runtime.build(config, store=store, sentry=sentry.capture_alert)
    daemon = Daemon(rt)
    churn = asyncio.create_task(_churn(sim, rt.lifecycle.stopping))
    try:
        return await daemon.run()
    finally:
        churn.cancel()


def _banner(config_path: Path, sim_url: str, listen: str) -> None:
    lines = [
        "janitor demo: the real daemon against a simulated Jupyter server",
        f"  simulated server: {sim_url}/api/sessions (token in {config_path.parent}/token)",
        f"  config:           {config_path}",
        f"  metrics, health:  http://{listen}/metrics  /healthz  /readyz",
        "  in another terminal, try:",
        f"    .venv/bin/janitor -c {config_path} audit list",
        f"    .venv/bin/janitor -c {config_path} explain",
        f"    .venv/bin/janitor -c {config_path} pause --reason 'just looking'",
        "  Ctrl-C stops the demo.",
    ]
    for line in lines:
        log.info("%s", line)
