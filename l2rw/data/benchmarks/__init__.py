"""The field's real-noise benchmarks, each read from its authors' published layout.

- `dataset=cifar10n` / `cifar100n`: CIFAR-10/100 with CIFAR-N's human labels (Wei et al., ICLR
  2022), the files `CIFAR-10_human.pt` / `CIFAR-100_human.pt` of
  https://github.com/UCSC-REAL/cifar-10-100n: `y` is CIFAR's label, `y_observed` the chosen
  human label set (`noise=source` trains on it).
- `dataset=animal10n`: ANIMAL-10N (Song et al., ICML 2019), `training/` and `testing/` folders of
  64x64 JPEGs named `<label>_<id>.jpg`; the labels are human ones with ~8% errors and no clean
  copy (`truth_known=False`).
- `dataset=food101n`: Food-101N (Lee et al., CVPR 2018), 310k web images whose labels are the
  search class (~20% wrong), 52,868 of them verified by people for training (and 4,741 for
  validation, unused here), tested on Food-101's test split. Only the training images
  verified correct are candidates for the clean (meta) pool (`RawSource.clean_candidates`).
- `dataset=clothing1m`: Clothing1M (Xiao et al., CVPR 2015), 1M images with labels from their
  web text and ~72k with a human label; the clean-labelled training images are the clean-pool
  candidates, the clean test images the test split.

Images are decoded once per process into uint8 tensors, as `dataset=folder` does (its decoding
and memory check are reused), resized (shorter side) and centre-cropped to `size`; a benchmark
whose tensors would exceed `max_memory_gb` is refused before any decoding. A listed image that is
missing or damaged, a label out of range or a listing that does not parse ends in one DataError
paragraph naming the file. Decoding is the cost (the full Clothing1M is 1M JPEGs, every run
decodes them again), so it runs on up to 8 threads; `train_keys_limit` reads a subset.
"""

# Each module registers its datasets when imported.
from l2rw.data.benchmarks import animal10n, cifar_n, clothing1m, food101n  # noqa: F401
