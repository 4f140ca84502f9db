"""Fashion-MNIST and the deterministic generators built on it."""

from attn_audit.storage.datasets.fashion.canvas import FashionCanvas
from attn_audit.storage.datasets.fashion.caption import FashionCaption
from attn_audit.storage.datasets.fashion.detect import FashionDetect
from attn_audit.storage.datasets.fashion.generator import FashionGenerator
from attn_audit.storage.datasets.fashion.grid import CELL_NAMES
from attn_audit.storage.datasets.fashion.mnist import CLASS_NAMES, CLASS_WORDS, load_fashion_mnist
from attn_audit.storage.datasets.fashion.vqa import ANSWER_VOCAB, FashionVqa

__all__ = ["ANSWER_VOCAB", "CELL_NAMES", "CLASS_NAMES", "CLASS_WORDS", "FashionCanvas", "FashionCaption",
           "FashionDetect", "FashionGenerator", "FashionVqa", "load_fashion_mnist"]
