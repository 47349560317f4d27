"""One torchrun per node of the SLURM job this runs in, joined by a c10d rendezvous at the job's
first node: `python -m cosmos_posttrain.slurm --nnodes 2 --nproc_per_node 8 -- -m
cosmos_posttrain.train ...` runs `srun ... torchrun --nnodes=2 --nproc_per_node=8
--rdzv_backend=c10d --rdzv_endpoint=<first node>:29500 --rdzv_id=<job id> -m ...`.

The job's nodes and CPUs are asked of the controller, not read from SLURM_* variables: the
Snakemake SLURM executor runs each rule inside a job step, where those variables describe the
step (one node) and srun would refuse to reach the other nodes. For the same reason srun gets
an environment without them, and --overlap to share the resources that step holds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from .cli import run_cli
from .errors import CosmosPosttrainError

KEEP = ("SLURM_JOB_ID", "SLURM_CONF")


class SlurmError(CosmosPosttrainError):
    """Not inside a SLURM job, or the job lacks the nodes the launch asks for."""


@dataclass(frozen=True)
class Job:
    id: str
    nodes: list[str]
    cpus_per_task: int


def _scontrol(*args: str) -> str:
    try:
        result = subprocess.run(
            ["scontrol", *args], capture_output=True, text=True, check=True, timeout=60
        )
    except subprocess.CalledProcessError as exc:
        raise SlurmError(f"scontrol {' '.join(args)} failed: {exc.stderr.strip()}") from exc
    except OSError as exc:
        raise SlurmError(f"scontrol {' '.join(args)} failed: {exc}") from exc
    return result.stdout


def scontrol_fields(text: str) -> dict[str, str]:
    """The Key=value pairs of `scontrol show ... -o` (one line per record)."""
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def current_job(env: Mapping[str, str]) -> Job:
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        raise SlurmError(
            "SLURM_JOB_ID is not set: launching on the nodes of a SLURM job works inside one "
            "(sbatch, salloc, or snakemake --workflow-profile profiles/slurm)"
        )
    fields = scontrol_fields(_scontrol("show", "job", "-o", job_id))
    nodes = _scontrol("show", "hostnames", fields["NodeList"]).split()
    cpus = fields.get("CPUs/Task", "1")
    return Job(job_id, nodes, int(cpus) if cpus.isdigit() else 1)


def node_address(node: str) -> str:
    """How the node is reached: its NodeAddr, which is its name unless slurm.conf says else."""
    return scontrol_fields(_scontrol("show", "node", "-o", node)).get("NodeAddr", node)


def srun_command(
    job: Job, address: str, nnodes: int, nproc_per_node: int, port: int, program: list[str]
) -> list[str]:
    """srun starting one torchrun on each of the job's first `nnodes` nodes."""
    return [
        "srun",
        "--overlap",
        "--kill-on-bad-exit=1",
        f"--nodes={nnodes}",
        f"--nodelist={','.join(job.nodes[:nnodes])}",
        f"--ntasks={nnodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={job.cpus_per_task}",
        "torchrun",
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={address}:{port}",
        f"--rdzv_id={job.id}",
        *program,
    ]


def srun_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment without the step's SLURM_*/SRUN_* settings, so srun asks the
    controller for the whole allocation."""
    return {k: v for k, v in env.items() if not k.startswith(("SLURM_", "SRUN_")) or k in KEEP}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options, then `--`, then what torchrun runs (which may hold its own `--`)."""
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nnodes", type=int, required=True, help="nodes, one torchrun on each")
    p.add_argument("--nproc_per_node", type=int, default=1, help="processes (GPUs) per node")
    p.add_argument("--rdzv_port", type=int, default=29500, help="rendezvous port, first node")
    return p.parse_args(argv[:split]), argv[split + 1 :]


def main(argv: list[str] | None = None) -> int:
    args, program = parse_args(list(sys.argv[1:] if argv is None else argv))

    def action() -> None:
        job = current_job(os.environ)
        if len(job.nodes) < args.nnodes:
            raise SlurmError(
                f"SLURM job {job.id} has {len(job.nodes)} node(s), the launch asks for "
                f"--nnodes={args.nnodes}; submit it with sbatch --nodes={args.nnodes} (the "
                "SLURM profile does that from train.nnodes)"
            )
        address = node_address(job.nodes[0])
        cmd = srun_command(job, address, args.nnodes, args.nproc_per_node, args.rdzv_port, program)
        print(shlex.join(cmd), file=sys.stderr, flush=True)
        os.execvpe(cmd[0], cmd, srun_environment(os.environ))

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
