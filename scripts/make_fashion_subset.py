"""Write the Fashion-MNIST test subset bundled with attn-audit, and its licence notice.

Reads the full test split from Debian's `dataset-fashion-mnist` (or --root) and keeps the first
--count images, in their original order:

    python scripts/make_fashion_subset.py [--count 5000] [--root /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from attn_audit.storage.datasets.fashion.mnist import BUNDLED_SUBSET, DEBIAN_ROOT, load_fashion_mnist  # noqa: E402

LICENSE_TEXT = """\
Fashion-MNIST subset bundled with attn-audit
============================================

fashion_mnist_subset.npz holds the first {count} images and labels of the Fashion-MNIST test set
(t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), unchanged, as written by
scripts/make_fashion_subset.py from Debian's dataset-fashion-mnist package.

Source: https://github.com/zalandoresearch/fashion-mnist
Xiao, Rasul, Vollgraf: "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", arXiv:1708.07747, 2017.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense,
and/or sell copies of the Software, and to permit persons to whom the Software is furnished to do so,
subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN
NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY,
WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="how many test images to keep (default 5000)")
    parser.add_argument("--root", default=str(DEBIAN_ROOT), help="folder with the Fashion-MNIST idx files")
    args = parser.parse_args()

    images, labels = load_fashion_mnist("test", root=args.root)
    if not 0 < args.count <= len(images):
        parser.error(f"--count must be in 1..{len(images)}")
    images, labels = images[:args.count], labels[:args.count]
    np.savez_compressed(BUNDLED_SUBSET, images=images, labels=labels)
    (BUNDLED_SUBSET.parent / "FASHION_MNIST_LICENSE.txt").write_text(LICENSE_TEXT.format(count=args.count))
    counts = np.bincount(labels, minlength=10).tolist()
    print(f"wrote {BUNDLED_SUBSET} ({BUNDLED_SUBSET.stat().st_size:,} bytes): {len(images)} images, "
          f"per class {counts}")


if __name__ == "__main__":
    main()
