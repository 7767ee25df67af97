"""Make models/reference.npz, the MNIST digits personal models are measured against
(`digitlab.reference`), from the MNIST files in $DIGITLAB_DATA: reproducibly, from the
bundled model card's validation split.

    DIGITLAB_DATA=../shared/data/mnist python scripts/build_reference.py [--out PATH]

Prints the file's size and SHA-256; run it again and the bytes are the same.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from digitlab.calibrate import split_from_card
from digitlab.modelfile import bundled_model_path, read_card
from digitlab.reference import FILE_NAME, from_mnist, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=bundled_model_path().parent / FILE_NAME)
    parser.add_argument("--data", default=None, help="MNIST folder (default: $DIGITLAB_DATA)")
    args = parser.parse_args()
    split = split_from_card(read_card(bundled_model_path()))
    ref = from_mnist(split.n, split.val_size, split.seed, args.data)
    path = write(ref, args.out)
    raw = path.read_bytes()
    sizes = ", ".join(f"{p} {ref.size(p)}" for p in ref.labels)
    print(f"{path}: {len(raw):,} bytes, sha256 {hashlib.sha256(raw).hexdigest()} ({sizes})")


if __name__ == "__main__":
    main()
