# Figures, tables and video pages for `snakemake --report`: one category per stage.


rule dataset_report:
    input:
        f"{RESULTS}/dataset/manifest.tsv",
    output:
        table=report(
            f"{RESULTS}/report/dataset/manifest.html",
            caption="../report/manifest.rst",
            category="1. Dataset",
            labels={"figure": "manifest"},
        ),
        frames=report(
            f"{RESULTS}/report/dataset/frames.png",
            caption="../report/histograms.rst",
            category="1. Dataset",
            labels={"figure": "frame counts"},
        ),
        durations=report(
            f"{RESULTS}/report/dataset/durations.png",
            caption="../report/histograms.rst",
            category="1. Dataset",
            labels={"figure": "durations"},
        ),
        resolutions=report(
            f"{RESULTS}/report/dataset/resolutions.png",
            caption="../report/histograms.rst",
            category="1. Dataset",
            labels={"figure": "resolutions"},
        ),
    log:
        f"{RESULTS}/logs/report/dataset.log",
    conda:
        "../envs/report.yaml"
    message:
        "Plotting the dataset: manifest table, frame counts, durations, resolutions"
    script:
        "../workflow/scripts/dataset_report.py"


rule training_report:
    input:
        f"{RESULTS}/train/{{control}}.done",
    output:
        loss=report(
            f"{RESULTS}/report/train/{{control}}/loss.png",
            caption="../report/loss.rst",
            category="3. Post-training",
            subcategory="{control}",
            labels={"control": "{control}", "figure": "loss"},
        ),
        lr=report(
            f"{RESULTS}/report/train/{{control}}/learning_rate.png",
            caption="../report/learning_rate.rst",
            category="3. Post-training",
            subcategory="{control}",
            labels={"control": "{control}", "figure": "learning rate"},
        ),
        samples=report(
            f"{RESULTS}/report/train/{{control}}/samples.html",
            caption="../report/samples.rst",
            category="3. Post-training",
            subcategory="{control}",
            labels={"control": "{control}", "figure": "samples"},
        ),
    log:
        f"{RESULTS}/logs/report/train_{{control}}.log",
    conda:
        "../envs/report.yaml"
    params:
        run_dir=lambda wc: run_dir_of(wc.control),
    message:
        "Plotting loss and learning rate of the {wildcards.control} run; gathering its samples"
    script:
        "../workflow/scripts/training_report.py"


rule inference_report:
    input:
        f"{RESULTS}/inference/{{control}}/done.txt",
    output:
        report(
            f"{RESULTS}/report/inference/{{control}}.html",
            caption="../report/inference.rst",
            category="4. Inference",
            labels={"control": "{control}"},
        ),
    log:
        f"{RESULTS}/logs/report/inference_{{control}}.log",
    conda:
        "../envs/report.yaml"
    message:
        "Gathering the videos generated with the {wildcards.control} branch"
    script:
        "../workflow/scripts/inference_report.py"


rule demo_eval_report:
    input:
        f"{RESULTS}/demo_eval/eval.json",
    output:
        table=report(
            f"{RESULTS}/report/demo_eval/eval.html",
            caption="../report/demo_eval.rst",
            category="5. Demo evaluation",
            labels={"figure": "scores"},
        ),
        chart=report(
            f"{RESULTS}/report/demo_eval/edge_f1.png",
            caption="../report/demo_eval.rst",
            category="5. Demo evaluation",
            labels={"figure": "edge F1 per clip"},
        ),
    log:
        f"{RESULTS}/logs/report/demo_eval.log",
    conda:
        "../envs/report.yaml"
    message:
        "Tabulating and plotting the demo's edge agreement"
    script:
        "../workflow/scripts/demo_eval_report.py"


rule report_figures:
    input:
        report_figures_input,
