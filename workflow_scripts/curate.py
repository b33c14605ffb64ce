"""Rule curate: write samples.parquet and class_counts.parquet of one dataset."""

from longtail.curation import CurationConfig, curate
from longtail.io import write_parquet
from longtail.runtime import log_to, source_params
from longtail.sources import load_source


def main(smk) -> None:
    log_to(smk.log[0])
    cur = dict(smk.params.curation)
    seed = cur.pop("seed")  # the subsampling seed is curate()'s argument, not a CurationConfig field
    cur["shots"] = smk.params.shots
    name, opts = source_params(smk.params.source)
    cfg = CurationConfig.from_dict(cur)
    far = [load_source(*source_params(entry.source)) for entry in cfg.far_open]  # far open set (open_far)
    samples, counts = curate(load_source(name, opts), cfg, seed=seed, far_sources=far)
    write_parquet(samples, smk.output.samples)
    write_parquet(counts, smk.output.counts)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
