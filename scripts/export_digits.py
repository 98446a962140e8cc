"""Write scikit-learn's bundled handwritten digits as a `dataset=arrays` file, a real dataset to
try the runner on with no download.

    python scripts/export_digits.py data/digits.npz [--test-fraction 0.2] [--seed 0]

The 1,797 8x8 images (UCI "Optical Recognition of Handwritten Digits", 16 gray levels) are
scaled from 0..16 to 0..255 (x * 255 / 16, rounded) as uint8 images, and split at random, class by
class, into training and test sets (`sklearn.model_selection.train_test_split`, stratified).
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the .npz file to write")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="the train / test split's seed")
    args = parser.parse_args()
    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        test_size=args.test_fraction,
        random_state=args.seed,
        stratify=digits.target,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.output, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"wrote {args.output}: {len(y_train)} training and {len(y_test)} test images, 8x8")


if __name__ == "__main__":
    main()
