# cosmos-posttrain: from raw video to a post-trained Cosmos-Transfer2.5 control branch.
# This file is the table of contents; the Python lives in rules/common.smk and the package.


import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/dataset.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/controls.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/dataset/manifest.tsv",


rule demo:
    input:
        manifest=f"{RESULTS}/dataset/manifest.tsv",
        evaluation=f"{RESULTS}/demo_eval/eval.json",
        converted=f"{RESULTS}/convert/edge.txt",
        inference=f"{RESULTS}/inference/edge/done.txt",
        previews=f"{RESULTS}/previews/contact_sheet.png",
        report=report_files(trained=["edge"], inferred=["edge"], evaluated=True),
    output:
        f"{RESULTS}/demo_done.txt",
    log:
        f"{RESULTS}/logs/demo.log",
    conda:
        "envs/data.yaml"
    message:
        "Demo chain finished"
    script:
        "workflow/scripts/demo_summary.py"
