"""``forgellm train --nproc N [--hostfile FILE]``: start the workers through the engine's own launcher.

torch: ``torchrun`` (``python -m torch.distributed.run``), once on this machine, or once per
machine of the host file over ssh (``--nnodes``/``--node-rank``, c10d rendezvous on the first
host). mlx: ``mlx.launch`` with the ring backend (it ssh-es to the hosts of the host file
itself). Every worker runs ``python -m forgellm train`` with the same arguments.

The host file is mlx's JSON format, one entry per machine, ``--nproc`` processes on each::

    [{"ssh": "node1", "ips": ["10.0.0.1"]}, {"ssh": "node2", "ips": ["10.0.0.2"]}]

This process waits for the launcher, then reads the run's ``status.json``: ``mlx.launch``
exits 0 even when a worker failed, the run folder says what happened.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from forgellm.errors import ForgeError, UserError
from forgellm.jsonio import read_json
from forgellm.runs.layout import STATUS_FILE

TORCH_RDZV_PORT = 29500
RANK_ENV = {"RANK", "MLX_RANK"}  # set for each worker by torchrun / mlx.launch
WATCH_SECONDS = 0.5  # how often the launcher's workers are looked at
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Host:
    ssh: str
    ip: str


def read_hostfile(path: Path) -> list[Host]:
    """The machines of an mlx-style JSON host file, in rank order."""
    try:
        entries = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read the host file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(
            f"host file {path} is not JSON ({exc}); expected [{{\"ssh\": \"node1\", \"ips\": [\"10.0.0.1\"]}}, ...]"
        ) from None
    hosts = []
    for i, entry in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(entry, dict) or not isinstance(entry.get("ssh"), str) or not entry.get("ips"):
            raise UserError(
                f"host file {path}: entry {i} must look like "
                f'{{"ssh": "node1", "ips": ["10.0.0.1"]}} (an ssh name and its IP addresses)'
            )
        hosts.append(Host(entry["ssh"], str(entry["ips"][0])))
    if not hosts:
        raise UserError(f"host file {path} lists no machine")
    return hosts


def free_port(count: int) -> int:
    """A port ``p`` with ``p - 1 .. p + count - 1`` free on this machine (the watch uses ``p - 1``)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65536 and all(_is_free(p) for p in range(base - 1, base + count)):
            return base
    raise UserError("found no free local ports for the workers; set FORGELLM_WATCH_ADDR and retry")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_command(train_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "forgellm", "train", *train_args]


def torch_commands(nproc: int, hosts: list[Host] | None, train_args: list[str]) -> list[list[str]]:
    """One torchrun command per machine (one only without a host file)."""
    run = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    module = ["-m", "forgellm", "train", *train_args]
    if not hosts:
        return [[*run, "--standalone", *module]]
    endpoint = f"{hosts[0].ip}:{TORCH_RDZV_PORT}"
    return [
        [
            *run,
            f"--nnodes={len(hosts)}",
            f"--node-rank={i}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            *module,
        ]
        for i in range(len(hosts))
    ]


def mlx_command(nproc: int, hosts: list[Host] | None, train_args: list[str], port: int) -> tuple[list[str], str | None]:
    """The mlx.launch command and, with a host file, the expanded host file it needs (one entry per rank)."""
    launch = [
        sys.executable,
        "-c",
        "from mlx._distributed_utils.launch import main; main()",
        "--backend",
        "ring",
        "--starting-port",
        str(port),
    ]
    if not hosts:
        return [*launch, "--hosts", "127.0.0.1", "-n", str(nproc), *worker_command(train_args)], None
    expanded = json.dumps([{"ssh": h.ssh, "ips": [h.ip]} for h in hosts for _ in range(nproc)])
    return [*launch, "--hostfile", "{hostfile}", *worker_command(train_args)], expanded


def worker_env(nproc: int) -> dict[str, str]:
    """This environment with the machine's cores split between its workers (unless the user chose)."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    for name in THREAD_ENV:
        env.setdefault(name, threads)
    return env


@dataclass(frozen=True)
class Launched:
    code: int  # the launcher's exit status
    world_size: int
    first_ended: int | None = None  # the rank of this machine's workers seen to end first, if one alone


def launch(engine: str, nproc: int, hostfile: str | None, train_args: list[str]) -> Launched:
    """Run the workers to their end."""
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    hosts = read_hostfile(Path(hostfile)) if hostfile else None
    env = worker_env(nproc)
    world_size = nproc * (len(hosts) if hosts else 1)
    if engine == "torch":
        commands = torch_commands(nproc, hosts, train_args)
        if not hosts:
            return _call(commands[0], env, world_size)
        return Launched(_run_on_hosts(hosts, commands), world_size)
    if engine == "mlx":
        port = free_port(nproc) if not hosts else 32323
        command, expanded = mlx_command(nproc, hosts, train_args, port)
        if expanded is None:
            return _call(command, env, world_size)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            fh.write(expanded)
        try:
            command = [fh.name if part == "{hostfile}" else part for part in command]
            return _call(command, env, world_size)
        finally:
            os.unlink(fh.name)
    raise UserError(f"unknown engine {engine!r}; expected torch or mlx")


def _call(command: list[str], env: dict[str, str], world_size: int) -> Launched:
    """Run the launcher in its own session; Ctrl-C here becomes ONE SIGINT to each local worker.

    Left in the terminal's process group, the launcher would also get the SIGINT and pass on
    another signal (torchrun's agent does), and a second signal makes a worker quit without
    its checkpoint. So the launcher is shielded and only the workers are told: they agree to
    stop at the next step, rank 0 saves, and the launcher ends with them. Meanwhile the workers
    are watched (`_WorkerWatch`) for which of them ends first."""
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    watch = _WorkerWatch(proc.pid)
    try:
        while True:
            try:
                code = proc.wait(timeout=WATCH_SECONDS)
                watch.scan()
                return Launched(code, world_size, watch.first_ended)
            except subprocess.TimeoutExpired:
                watch.scan()
            except KeyboardInterrupt:
                print("stopping: the workers finish their step and save a checkpoint", file=sys.stderr, flush=True)
                watch.scan()
                for worker in watch.alive.values():
                    try:
                        worker.send_signal(signal.SIGINT)
                    except psutil.Error:
                        pass
    finally:
        if proc.poll() is None:  # this process is failing: do not leave the workers behind
            proc.kill()


class _WorkerWatch:
    """The local workers under a launcher (processes with a rank in their environment, not the
    launcher or its helpers), and which of them ended first. Rank 0 names a lost worker itself
    (`forgellm.training.distributed_watchdog`), but an engine can also take rank 0 down with it
    (an abort in a native thread): then only this process can still say who went first."""

    def __init__(self, launcher_pid: int):
        self.launcher_pid = launcher_pid
        self.alive: dict[int, psutil.Process] = {}  # rank -> worker
        self.ended: set[int] = set()
        self.first_ended: int | None = None  # None also when several were first seen gone together

    def scan(self) -> None:
        try:
            children = psutil.Process(self.launcher_pid).children(recursive=True)
        except psutil.Error:  # the launcher has ended
            children = []
        known = {worker.pid for worker in self.alive.values()}
        for child in children:
            if child.pid in known:
                continue
            try:  # read again each time: mlx.launch's shell exports the rank, then execs the worker
                env = child.environ()
            except psutil.Error:
                continue
            ranks = [int(env[name]) for name in RANK_ENV if env.get(name, "").isdigit()]
            if ranks and ranks[0] not in self.alive and ranks[0] not in self.ended:
                self.alive[ranks[0]] = child
        gone = [rank for rank, worker in self.alive.items() if not _running(worker)]
        if gone and not self.ended and len(gone) == 1:
            self.first_ended = gone[0]
        for rank in gone:
            self.ended.add(rank)
            del self.alive[rank]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _run_on_hosts(hosts: list[Host], commands: list[list[str]]) -> int:
    """torchrun on every machine over ssh, in this directory; the first failure stops the others."""
    cwd = shlex.quote(os.getcwd())
    procs = [
        subprocess.Popen(["ssh", host.ssh, f"cd {cwd} && {shlex.join(command)}"], stdin=subprocess.DEVNULL)
        for host, command in zip(hosts, commands)
    ]
    status = 0
    try:
        while procs:
            for proc in list(procs):
                try:
                    code = proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    continue
                procs.remove(proc)
                if code != 0 and status == 0:
                    status = code
                    for other in procs:
                        other.terminate()
    finally:
        for proc in procs:
            proc.kill()
    return status


def launch_training(
    *,
    config_file: str | None,
    sets: tuple[str, ...],
    resume: str | None,
    overwrite: bool,
    nproc: int,
    hostfile: str | None,
) -> Path:
    """Validate the run here, launch its workers, and return the run folder once they are done.

    A fresh run gets its name now (``--set run_name=...``), so this process knows its folder."""
    from forgellm.runs.layout import find_run
    from forgellm.runs.lock import refuse_if_held
    from forgellm.training.config import build_config, parse_overrides
    from forgellm.training.run import load_run_config, resolve_models, run_folder
    from forgellm.workspace import Workspace

    workspace = Workspace.current()
    overrides = parse_overrides(sets)
    args = [arg for s in sets for arg in ("--set", s)]
    if resume:
        run_dir = find_run(resume, workspace)
        config = load_run_config(run_dir, overrides)
        args += ["--resume", str(run_dir)]
    else:
        config = build_config(config_file, overrides)
        base, _ = resolve_models(config, workspace)
        run_dir = run_folder(config, base, workspace)
        args += ([] if config_file is None else ["--config", config_file]) + ["--set", f"run_name={run_dir.name}"]
        args += ["--overwrite"] if overwrite else []
    if run_dir.exists():  # a live trainer of this run (another launch, the CLI, the web app): refuse now
        refuse_if_held(run_dir, "resume" if resume else "overwrite")
    launched = launch(config.resolved_engine(), nproc, hostfile, args)
    status = _read_status(run_dir)
    if status.get("status") == "running":  # every worker has ended, and none recorded why
        status = _record_lost_workers(run_dir, status, launched)
    if status.get("status") == "failed":
        raise WorkersFailed(f"training failed: {status.get('message')}")
    if launched.code != 0 or status.get("status") not in ("done", "stopped"):
        raise WorkersFailed(
            f"the {nproc}-worker launch ended with status {launched.code} and the run is "
            f"{status.get('status', 'not started')}; see the workers' messages above"
            + (f" and {run_dir / 'train.log'}" if run_dir.exists() else "")
        )
    return run_dir


def _record_lost_workers(run_dir: Path, status: dict, launched: Launched) -> dict:
    """The run's ``error`` event, written here when its workers all ended without one (rank 0 went
    down with a lost worker), naming the rank that ended first when this machine saw it."""
    from forgellm.training.callbacks import MetricsFile, StatusFile
    from forgellm.training.distributed import worker_lost
    from forgellm.training.run import ErrorRecorder

    first = [] if launched.first_ended is None else [launched.first_ended]
    message = str(
        worker_lost(first, launched.world_size, "the launcher saw every worker end, rank 0 without recording why")
    )
    metrics = MetricsFile(run_dir / "metrics.jsonl")
    try:
        status_file = StatusFile(run_dir / "status.json", int(status.get("total_steps", 0)))
        ErrorRecorder([metrics, status_file]).record(message, int(status.get("step", 0)))
    finally:
        metrics.close()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return _read_status(run_dir)


class WorkersFailed(ForgeError):
    """A distributed run that did not finish; the message says why, the run folder keeps its checkpoints."""

    kind = "training_failed"


def _read_status(run_dir: Path) -> dict:
    """status.json as rank 0 left it (no lock check: every worker has ended by now)."""
    return read_json(run_dir / STATUS_FILE) or {}
