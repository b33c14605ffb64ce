"""Rule sample_grid: a few training images of every known class, labelled with the class names."""

import numpy as np

from longtail.contracts import read_samples
from longtail.io import save_figure
from longtail.plots import pick_samples, sample_grid
from longtail.runtime import log_to, source_params
from longtail.sources import load_source


def read_image(source, split: str, index: int) -> np.ndarray:
    """One image as uint8: from memory, or decoded from its file and shrunk to a thumbnail."""
    if source.in_memory:
        return np.asarray(source.images[split][index])
    from PIL import Image

    with Image.open(source.paths[split][index]) as img:
        img = img.convert("RGB")
        img.thumbnail((96, 96))
        return np.asarray(img)


def main(smk) -> None:
    log_to(smk.log[0])
    name, opts = source_params(smk.params.source)
    source = load_source(name, opts)
    rows = pick_samples(read_samples(smk.input.samples), int(smk.params.per_class))
    images = [read_image(source, s, int(i)) for s, i in zip(rows["source"], rows["source_index"])]
    names = rows.drop_duplicates("label")["class_name"].tolist()
    fig = sample_grid(images, rows["label"].to_numpy(), names, int(smk.params.per_class),
                      f"{smk.wildcards.dataset}: training images, {smk.params.per_class} per class")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
