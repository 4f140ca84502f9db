"""Fashion-MNIST and the deterministic generators built on it."""

from storage.datasets.fashion.canvas import FashionCanvas
from storage.datasets.fashion.caption import FashionCaption
from storage.datasets.fashion.detect import FashionDetect
from storage.datasets.fashion.generator import FashionGenerator
from storage.datasets.fashion.grid import CELL_NAMES
from storage.datasets.fashion.mnist import CLASS_NAMES, CLASS_WORDS, load_fashion_mnist
from storage.datasets.fashion.vqa import ANSWER_VOCAB, FashionVqa

__all__ = ["ANSWER_VOCAB", "CELL_NAMES", "CLASS_NAMES", "CLASS_WORDS", "FashionCanvas", "FashionCaption",
           "FashionDetect", "FashionGenerator", "FashionVqa", "load_fashion_mnist"]
