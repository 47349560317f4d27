# Control videos: depth and segmentation as sharded GPU jobs, and previews of every control.


rule depth_group:
    input:
        group_videos,
    output:
        f"{RESULTS}/controls/depth/group_{{group}}.txt",
    log:
        f"{RESULTS}/logs/controls/depth_{{group}}.log",
    conda:
        "../envs/controls.yaml"
    resources:
        gpu=1,
    params:
        dataset_dir=config["dataset_dir"],
        clips=group_clips,
        model=config["controls"]["depth_model"],
        batch_size=config["controls"]["depth_batch_size"],
    message:
        "Depth videos for clip group {wildcards.group}"
    script:
        "../workflow/scripts/depth_group.py"


rule seg_group:
    input:
        group_videos,
    output:
        f"{RESULTS}/controls/seg/group_{{group}}.txt",
    log:
        f"{RESULTS}/logs/controls/seg_{{group}}.log",
    conda:
        "../envs/controls.yaml"
    resources:
        gpu=1,
    params:
        dataset_dir=config["dataset_dir"],
        clips=group_clips,
        sam_model=config["controls"]["sam_model"],
        grounding_model=config["controls"]["grounding_model"],
        prompt=config["controls"]["seg_prompt"],
        on_empty=config["controls"]["seg_on_empty"],
    message:
        "Segmentation videos for clip group {wildcards.group}"
    script:
        "../workflow/scripts/seg_group.py"


rule depth:
    input:
        lambda wc: control_group_markers("depth"),


rule seg:
    input:
        lambda wc: control_group_markers("seg"),


rule preview_controls:
    input:
        f"{RESULTS}/dataset/manifest.tsv",
    output:
        sheet=report(
            f"{RESULTS}/previews/contact_sheet.png",
            caption="../report/previews.rst",
            category="2. Control previews",
            labels={"figure": "contact sheet"},
        ),
        videos=report(
            f"{RESULTS}/previews/previews.html",
            caption="../report/previews.rst",
            category="2. Control previews",
            labels={"figure": "videos"},
        ),
    log:
        f"{RESULTS}/logs/preview_controls.log",
    conda:
        "../envs/controls.yaml"
    params:
        dataset_dir=config["dataset_dir"],
        clips=config["controls"]["preview_clips"],
    message:
        "Rendering control previews (source | edge | vis | depth | seg)"
    script:
        "../workflow/scripts/preview_controls.py"


rule vis_group:
    input:
        group_videos,
    output:
        f"{RESULTS}/controls/vis/group_{{group}}.txt",
    log:
        f"{RESULTS}/logs/controls/vis_{{group}}.log",
    conda:
        "../envs/controls.yaml"
    threads: 1
    params:
        dataset_dir=config["dataset_dir"],
        clips=group_clips,
        variants=config["controls"]["vis_variants"],
        seed=config["train"]["seed"],
    message:
        "Precomputing {params.variants} blur draws per clip for group {wildcards.group}"
    script:
        "../workflow/scripts/vis_group.py"


rule vis:
    input:
        lambda wc: control_group_markers("vis"),
