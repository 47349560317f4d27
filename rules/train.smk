# Post-training of the control branch (torchrun), and the demo's base model and evaluation.


rule demo_base:
    input:
        f"{RESULTS}/dataset/manifest.tsv",
    output:
        DEMO_BASE,
    log:
        f"{RESULTS}/logs/demo_base.log",
    conda:
        "../envs/train.yaml"
    params:
        dataset_dir=config["dataset_dir"],
        iterations=config["demo"]["base_iterations"],
        num_frames=config["train"]["num_frames"],
        seed=config["train"]["seed"],
    message:
        "Pre-training the tiny base model (the demo's stand-in for the released weights)"
    script:
        "../workflow/scripts/demo_base.py"


rule train:
    input:
        manifest=f"{RESULTS}/dataset/manifest.tsv",
        base=train_base_input,
    output:
        f"{RESULTS}/train/{{control}}.done",
    log:
        f"{RESULTS}/logs/train_{{control}}.log",
    conda:
        "../envs/train.yaml"
    resources:
        **launch_resources(),
    params:
        launcher=train_launcher,
        overrides=train_overrides,
        run_dir=lambda wc: run_dir_of(wc.control),
    message:
        "Post-training the {wildcards.control} control branch; checkpoints in {params.run_dir}"
    shell:
        "{params.launcher} -m cosmos_posttrain.train"
        " --config=cosmos_transfer2/singleview_config.py -- {params.overrides} > {log} 2>&1"
        " && echo {params.run_dir} > {output}"


rule train_edge:
    input:
        f"{RESULTS}/train/edge.done",


rule train_depth:
    input:
        f"{RESULTS}/train/depth.done",


rule train_seg:
    input:
        f"{RESULTS}/train/seg.done",


rule train_vis:
    input:
        f"{RESULTS}/train/vis.done",


rule demo_eval:
    input:
        trained=f"{RESULTS}/train/edge.done",
        base=DEMO_BASE,
    output:
        f"{RESULTS}/demo_eval/eval.json",
    log:
        f"{RESULTS}/logs/demo_eval.log",
    conda:
        "../envs/train.yaml"
    params:
        dataset_dir=config["dataset_dir"],
        run_dir=run_dir_of("edge"),
        preset=config["demo"]["eval_preset"],
    message:
        "Measuring whether the demo learned: loss, edge agreement, swap test"
    script:
        "../workflow/scripts/demo_eval.py"
