# All Python of the workflow: config validation, paths and input functions.
import json
import os
import shlex
from pathlib import Path

from snakemake.utils import validate

from cosmos_posttrain.config_schema import ConfigError, check_config
from cosmos_posttrain.demo_data import DEMO_CLIPS
from cosmos_posttrain.experiments import latent_frames

check_config(config, Path(workflow.basedir) / "config" / "config.schema.yaml")
validate(config, schema="../config/config.schema.yaml")
if config["train"]["nnodes"] > 1 and config["train"]["launcher"] != "srun":
    raise ConfigError(
        f"train.nnodes={config['train']['nnodes']} needs train.launcher: srun "
        "(several nodes are joined inside one SLURM job; see the README)"
    )

RESULTS = config["results_dir"]
STORAGE = config["videoufo"]["storage_dir"]
DEMO_DATASET = "results/demo_dataset"
DEMO_IDS = [clip.id for clip in DEMO_CLIPS]
DATASET_SUBFOLDERS = ("videos", "captions", "metas", "depth", "seg")


DEMO_BASE = f"{RESULTS}/demo_base/tiny_base.pt"
EXPERIMENT = "transfer2_singleview_posttrain_{control}_example"
OUTPUT_ROOT = os.path.abspath(
    os.environ.get("IMAGINAIRE_OUTPUT_ROOT", config["train"]["output_root"])
)


wildcard_constraints:
    shard=r"\d+",
    group=r"\d+",
    control="edge|depth|seg|vis",


def same_path(a, b):
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def storage_of(path):
    """The VideoUFO storage folder of one of its files (manifests/x.json or a top-level file)."""
    path = Path(path)
    return str(path.parent.parent if path.parent.name == "manifests" else path.parent)


def dataset_of(video_path):
    """The dataset folder of one of its clips, videos/<id>.mp4."""
    return str(Path(video_path).parent.parent)


def videoufo_caption_mode():
    v = config["videoufo"]
    if v["use_brief_caption"]:
        return "brief"
    return "detailed" if v["no_concat_brief"] else "concat"


def videoufo_previous_manifest(wildcards):
    """Shard i starts counting where shard i-1 stopped."""
    shard = int(wildcards.shard)
    return [] if shard == 1 else [f"{STORAGE}/manifests/shard_{shard - 1}.json"]


def videoufo_shard_manifests(wildcards):
    """Walk the shards in order until enough clips exist; later shards are never fetched."""
    manifests = []
    for shard in range(1, config["videoufo"]["num_tars"] + 1):
        path = checkpoints.videoufo_extract.get(shard=shard).output.manifest
        manifests.append(path)
        if (
            json.loads(Path(path).read_text())["kept_total"]
            >= config["videoufo"]["num_videos"]
        ):
            break
    return manifests


def dataset_inputs(wildcards):
    """What the dataset at `dataset_dir` is made from: the demo rule, the VideoUFO stage,
    or, for a user's own folder, its files (so editing the folder reruns validation)."""
    dataset = config["dataset_dir"]
    if same_path(dataset, DEMO_DATASET):
        return expand(
            f"{DEMO_DATASET}/{{kind}}/{{id}}.{{ext}}",
            zip,
            kind=["videos"] * len(DEMO_IDS) + ["captions"] * len(DEMO_IDS),
            id=DEMO_IDS * 2,
            ext=["mp4"] * len(DEMO_IDS) + ["json"] * len(DEMO_IDS),
        )
    if same_path(dataset, STORAGE):
        return [f"{STORAGE}/videoufo_manifest.json"]
    files = []
    for sub in DATASET_SUBFOLDERS:
        folder = Path(dataset) / sub
        if folder.is_dir():
            files += sorted(str(p) for p in folder.iterdir() if p.is_file())
    return files


def run_dir_of(control):
    """Where the trainer writes this experiment's checkpoints, samples and logs."""
    return os.path.join(
        OUTPUT_ROOT,
        "cosmos_transfer2_posttrain",
        "local_single_view",
        EXPERIMENT.format(control=control),
    )


def train_base_input(wildcards):
    """The demo's base model is built by a rule; any other load_path is the user's file."""
    load_path = config["train"]["load_path"]
    if load_path and same_path(load_path, DEMO_BASE):
        return [DEMO_BASE]
    return [load_path] if load_path and os.path.isfile(load_path) else []


def train_launcher(wildcards):
    """How training and inference start. standalone: torchrun on this machine, on GPUs
    no other job holds (cosmos_posttrain.gpus). srun:
    cosmos_posttrain.slurm runs `srun ... torchrun --nnodes=N --rdzv_backend=c10d ...`,
    one torchrun per node of the SLURM job, meeting on the job's first node."""
    t = config["train"]
    nproc = t["nproc_per_node"]
    if t["launcher"] == "standalone":
        torchrun = f"torchrun --standalone --nproc_per_node={nproc}"
        gpus = launch_resources()["gpu"]
        if not gpus:
            return torchrun
        return f"python -m cosmos_posttrain.gpus {gpus} -- {torchrun}"
    return (
        f"python -m cosmos_posttrain.slurm --nnodes={t['nnodes']} --nproc_per_node={nproc}"
        f" --rdzv_port={t['rdzv_port']} --"
    )


def launch_resources():
    """What a training or inference job asks of the scheduler. standalone: `gpu` GPUs,
    counted against `--resources gpu=N`, which the SLURM plugin turns into --gpus. srun:
    nnodes nodes, one task each, and nproc_per_node GPUs on every node as gres (the
    plugin's --gpus is a total that SLURM may spread unevenly over the nodes)."""
    t = config["train"]
    gpus = 0 if t["device"] == "cpu" else t["nproc_per_node"]
    if t["launcher"] == "standalone":
        return {"gpu": gpus, "nodes": 1, "tasks": 1, "tasks_per_gpu": 0}
    return {
        "gpu": 0,
        "gres": f"gpu:{gpus}" if gpus else None,
        "nodes": t["nnodes"],
        "tasks": t["nnodes"],
        "tasks_per_gpu": 0,
    }


def train_overrides(wildcards):
    """config.yaml's train block as the seed's dotted overrides: one mechanism for both."""
    t = config["train"]
    state_t = latent_frames(t["num_frames"])
    items = [
        f"experiment={EXPERIMENT.format(control=wildcards.control)}",
        f"dataloader_train.dataset.dataset_dir={os.path.abspath(config['dataset_dir'])}",
        "dataloader_train.sampler.dataset=${dataloader_train.dataset}",
        f"dataloader_train.dataset.num_frames={t['num_frames']}",
        f"model.config.state_t={state_t}",
        f"trainer.max_iter={t['max_iter']}",
        f"trainer.seed={t['seed']}",
        f"checkpoint.save_iter={t['save_iter']}",
        f"optimizer.lr={t['lr']}",
        f"scheduler.warm_up_steps=[{t['warm_up_steps']}]",
        f"trainer.grad_accum_iter={t['grad_accum_iter']}",
        f"job.wandb_mode={t['wandb_mode']}",
        f"output_root={OUTPUT_ROOT}",
    ]
    items += model_override_items()
    items += list(t["overrides"])
    return " ".join(shlex.quote(item) for item in items)


def model_override_items():
    """Which model to build: shared by training and inference."""
    t = config["train"]
    items = [f"preset={t['preset']}", f"trainer.device={t['device']}"]
    if t["load_path"]:
        items.append(f"checkpoint.load_path={os.path.abspath(t['load_path'])}")
    return items


def model_overrides(wildcards):
    return " ".join(shlex.quote(item) for item in model_override_items())


def inference_spec_input(wildcards):
    """The user's spec, or the demo's (written by a rule) when none is configured."""
    spec = config["inference"]["spec"]
    return spec if spec else f"{RESULTS}/demo_spec/demo.jsonl"


def inference_options(wildcards):
    i = config["inference"]
    options = []
    for key in ("num_steps", "guidance"):
        if i[key] is not None:
            options.append(f"--{key.replace('_', '-')} {i[key]}")
    if i["disable_guardrails"]:
        options.append("--disable-guardrails")
    return " ".join(options)


def dataset_clip_ids():
    """Clip ids of dataset_dir, known at DAG time: the demo's table, the VideoUFO summary (a
    checkpoint), or the user's folder."""
    dataset = config["dataset_dir"]
    if same_path(dataset, DEMO_DATASET):
        return sorted(DEMO_IDS)
    if same_path(dataset, STORAGE):
        summary = checkpoints.prepare_videoufo.get().output[0]
        return sorted(json.loads(Path(summary).read_text())["clips"])
    return sorted(p.stem for p in (Path(dataset) / "videos").glob("*.mp4"))


def control_groups():
    """Clips in groups of controls.group_size: one GPU job per group, never one per clip."""
    ids = dataset_clip_ids()
    size = config["controls"]["group_size"]
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def group_clips(wildcards):
    return control_groups()[int(wildcards.group)]


def group_videos(wildcards):
    videos = f"{config['dataset_dir']}/videos"
    return [f"{videos}/{cid}.mp4" for cid in group_clips(wildcards)]


def control_group_markers(kind):
    return [
        f"{RESULTS}/controls/{kind}/group_{i}.txt" for i in range(len(control_groups()))
    ]


CONTROLS = ("edge", "depth", "seg", "vis")


def report_files(trained, inferred, evaluated):
    """What the report shows: the dataset and previews always, the runs, inference outputs and
    demo evaluation that are asked for."""
    files = [
        f"{RESULTS}/report/dataset/{name}"
        for name in ("manifest.html", "frames.png", "durations.png", "resolutions.png")
    ]
    files += [
        f"{RESULTS}/previews/contact_sheet.png",
        f"{RESULTS}/previews/previews.html",
    ]
    for control in trained:
        files += [
            f"{RESULTS}/report/train/{control}/{name}"
            for name in ("loss.png", "learning_rate.png", "samples.html")
        ]
    files += [f"{RESULTS}/report/inference/{control}.html" for control in inferred]
    if evaluated:
        files += [
            f"{RESULTS}/report/demo_eval/{n}" for n in ("eval.html", "edge_f1.png")
        ]
    return files


def report_figures_input(wildcards):
    """The report of what has run: never starts a training, an inference or an evaluation."""
    return report_files(
        trained=[c for c in CONTROLS if os.path.exists(f"{RESULTS}/train/{c}.done")],
        inferred=[
            c for c in CONTROLS if os.path.exists(f"{RESULTS}/inference/{c}/done.txt")
        ],
        evaluated=os.path.exists(f"{RESULTS}/demo_eval/eval.json"),
    )
