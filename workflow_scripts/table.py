"""Rule table: one dataset's table over runs and seeds, in md, csv and tex."""

import pandas as pd

from longtail.contracts import read_metrics
from longtail.curation import ShotConfig
from longtail.io import write_text
from longtail.runtime import log_to
from longtail.tables import build_table, summarise, table_notes, threshold_description, to_latex, to_markdown


def main(smk) -> None:
    log_to(smk.log[0])
    metrics = pd.concat([read_metrics(p) for p in smk.input.metrics], ignore_index=True)  # refuses stale ones
    wide = build_table(summarise(metrics), smk.params.runs, smk.params.paper)
    d = smk.wildcards.dataset
    shots = smk.params.shots
    notes = [
        smk.params.description or d,
        f"Top-1 accuracy (%) on the balanced test split, mean ± std over seeds. Shot groups by training "
        f"images ({ShotConfig(**shots).description}). Open set: {threshold_description(smk.params.threshold)}; "
        "F-measure as OLTR's evaluation code computes it since "
        "its 2020 fix; AUROC with the known set as the positive class.",
        *table_notes(wide),
    ]
    write_text(to_markdown(wide, f"Results on {d}", notes), smk.output.md)
    csv = wide.copy()
    csv.insert(0, "dataset", d)
    write_text(csv.to_csv(index=False), smk.output.csv)
    write_text(to_latex(wide, f"Results on {d}: {notes[1]}"), smk.output.tex)  # to_latex escapes it


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
