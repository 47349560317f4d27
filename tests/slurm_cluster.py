"""A real SLURM cluster on this machine for the tests: munged, slurmctld and one slurmd per
node, every node at 127.0.0.1 on its own port, all state in one folder.

Debian's slurm-wlm and munge are installed with apt-get when they are missing (the tests run as
root on CI); where that is impossible the caller skips with the reason. No cgroups, no
accounting database: jobs are tracked with squeue, which keeps finished jobs for MinJobAge.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import free_port

BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


def _which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def install_slurm() -> str | None:
    """Install slurm-wlm and munge if missing; None when ready, else why they are unavailable."""
    if all(_which(b) for b in BINARIES):
        return None
    apt = _which("apt-get")
    if apt is None:
        return "slurm-wlm/munge are not installed and there is no apt-get to install them"
    if os.geteuid() != 0:
        return "slurm-wlm/munge are not installed and installing them with apt-get needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        [apt, "update", "-q"],
        [apt, "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"],
    ):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(result.stderr or result.stdout)[-800:]}"
    missing = [b for b in BINARIES if not _which(b)]
    return f"still missing after apt-get install: {', '.join(missing)}" if missing else None


class LocalSlurm:
    """`nodes` SLURM nodes named n1, n2, ... in one partition, all on this machine."""

    partition = "debug"

    def __init__(self, root: Path, nodes: int = 2) -> None:
        self.root = root
        self.nodes = [f"n{i + 1}" for i in range(nodes)]
        self.conf = root / "slurm.conf"
        self.bin = root / "bin"
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), PATH=path)
        self._daemons: list[subprocess.Popen] = []
        self._munged_pid: int | None = None

    def _config(self) -> str:
        cpus = os.cpu_count() or 1
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        ctld, *slurmd = (free_port() for _ in range(1 + len(self.nodes)))
        r = self.root
        lines = [
            "ClusterName=cosmostest",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={ctld}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge' / 'socket'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",  # nodes share this machine's CPUs and memory
            "MinJobAge=600",  # squeue reports finished jobs for 10 minutes
        ]
        for name, port in zip(self.nodes, slurmd, strict=True):
            lines.append(
                f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port}"
                f" CPUs={cpus} RealMemory={max(memory // len(self.nodes), 500)} State=UNKNOWN"
            )
        lines.append(
            f"PartitionName={self.partition} Nodes={','.join(self.nodes)} Default=YES"
            " MaxTime=INFINITE State=UP"
        )
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 60) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        for name in self.nodes:
            (r / "spool" / name).mkdir(exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        subprocess.run(
            [
                _which("munged"),
                "--force",  # as root, in a private folder
                f"--socket={r / 'munge' / 'socket'}",
                f"--key-file={key}",
                f"--pid-file={r / 'munge' / 'munged.pid'}",
                f"--log-file={r / 'munge' / 'munged.log'}",
                f"--seed-file={r / 'munge' / 'seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self._munged_pid = int((r / "munge" / "munged.pid").read_text())
        self.conf.write_text(self._config())
        self._client_shims()
        log = r / "log"
        commands = [[_which("slurmctld"), "-D"]]
        commands += [[_which("slurmd"), "-D", "-N", name] for name in self.nodes]
        for cmd in commands:
            out = open(log / f"{Path(cmd[0]).name}-{cmd[-1].strip('-')}.out", "wb")  # noqa: SIM115
            self._daemons.append(
                subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            )
            out.close()
        deadline = time.time() + timeout
        while self.node_states() != {"idle"}:
            if time.time() > deadline or any(d.poll() is not None for d in self._daemons):
                raise RuntimeError(f"SLURM did not come up: {self.node_states()}\n{self.logs()}")
            time.sleep(0.5)

    def _client_shims(self) -> None:
        """srun, sbatch, ... that find this cluster's slurm.conf. A cluster keeps it in
        /etc/slurm; here it lives in a temporary folder named by SLURM_CONF, and the SLURM
        executor's job step drops every SLURM_* variable before it calls srun."""
        self.bin.mkdir(exist_ok=True)
        for name in ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel", "sacct"):
            real = _which(name)
            if real:
                shim = self.bin / name
                shim.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec {real} "$@"\n')
                shim.chmod(0o755)

    def node_states(self) -> set[str]:
        result = subprocess.run(
            [_which("sinfo"), "-h", "-N", "-o", "%T"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return set(result.stdout.split()) if result.returncode == 0 else {"unreachable"}

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted((self.root / "log").glob("*"))
        )

    def stop(self) -> None:
        if self._daemons:
            subprocess.run(
                [_which("scancel"), "--partition", self.partition],
                env=self.env,
                capture_output=True,
                timeout=30,
            )
        for daemon in reversed(self._daemons):
            daemon.terminate()
        for daemon in self._daemons:
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        self._daemons.clear()
        if self._munged_pid is not None:
            try:
                os.kill(self._munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._munged_pid = None
