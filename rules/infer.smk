# Conversion of the latest checkpoint and inference with the fine-tuned control branch.


rule convert:
    input:
        f"{RESULTS}/train/{{control}}.done",
    output:
        f"{RESULTS}/convert/{{control}}.txt",
    log:
        f"{RESULTS}/logs/convert_{{control}}.log",
    conda:
        "../envs/train.yaml"
    params:
        checkpoints=lambda wc: os.path.join(run_dir_of(wc.control), "checkpoints"),
    message:
        "Converting the latest {wildcards.control} checkpoint (model.pt, model_ema_*.pt, diffusers)"
    script:
        "../workflow/scripts/convert_checkpoint.py"


rule convert_checkpoint:
    input:
        f"{RESULTS}/convert/{config['inference']['control']}.txt",


rule demo_inference_spec:
    input:
        f"{RESULTS}/dataset/manifest.tsv",
    output:
        spec=f"{RESULTS}/demo_spec/demo.jsonl",
    log:
        f"{RESULTS}/logs/demo_inference_spec.log",
    conda:
        "../envs/train.yaml"
    params:
        dataset_dir=config["dataset_dir"],
    message:
        "Writing the demo's inference spec (one control computed on the fly, one given)"
    script:
        "../workflow/scripts/demo_inference_spec.py"


rule inference:
    input:
        converted=f"{RESULTS}/convert/{{control}}.txt",
        spec=inference_spec_input,
    output:
        f"{RESULTS}/inference/{{control}}/done.txt",
    log:
        f"{RESULTS}/logs/inference_{{control}}.log",
    conda:
        "../envs/train.yaml"
    resources:
        **launch_resources(),
    params:
        launcher=train_launcher,
        out_dir=lambda wc: f"{RESULTS}/inference/{wc.control}",
        experiment=lambda wc: EXPERIMENT.format(control=wc.control),
        options=inference_options,
        overrides=model_overrides,
    message:
        "Generating videos for {input.spec} with the fine-tuned {wildcards.control} branch"
    shell:
        "{params.launcher} -m cosmos_posttrain.inference -i {input.spec} -o {params.out_dir}"
        " --checkpoint-path $(cat {input.converted}) --experiment {params.experiment}"
        " {params.options} -- {params.overrides} > {log} 2>&1"
        " && ls {params.out_dir}/*.mp4 > {output}"


rule run_inference:
    input:
        f"{RESULTS}/inference/{config['inference']['control']}/done.txt",
